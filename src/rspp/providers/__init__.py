"""Model runtimes and service adapters that nodes wrap.

``rspp.providers.local`` runs offline models that ship inside Python packages
(the ``local`` extra); ``rspp.providers.openai`` speaks the OpenAI-compatible
HTTP APIs (OpenAI, vLLM, Ollama, llama.cpp servers, Groq, ...).
"""
