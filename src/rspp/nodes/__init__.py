"""Built-in node types. They are registered by name in ``rspp.kernel.registry``."""
