"""Seeing what a session did: the per-turn timeline."""

from rspp.observability.timeline import Exchange, Timeline, render_html, render_svg, write_html

__all__ = ["Exchange", "Timeline", "render_html", "render_svg", "write_html"]
