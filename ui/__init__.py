"""pleura's web page (Gradio): live overlays and controls, offline reports.

``ui.overlay`` draws, ``ui.result_feed`` receives results and sends controls,
``ui.live_routes`` serves the live frames, ``ui.app`` lays out the page (entry point
``ui.app.serve``), ``ui.cli`` is ``pleura ui``. The UI never touches models; the report page
scores through ``ui.scoring`` (``pleura score``'s clip loop on the one scoring core,
``engines.scorer``).
"""
