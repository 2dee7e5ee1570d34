"""The HTTP server: FastAPI routes over the inference core, the registry and auth."""
