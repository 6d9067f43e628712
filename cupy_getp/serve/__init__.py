"""`cupy-getp serve`: an OpenAI-compatible HTTP server over one engine loop.

engine_loop.py (the thread that owns the engine and the scheduler), replies.py (tokens to text, stop
strings, harmony channels), schemas.py (request bodies), metrics.py, app.py (the FastAPI routes),
http_errors.py (OpenAI-style error bodies, the body limit, the API key), server.py (uvicorn, SIGTERM).
FastAPI and uvicorn are the optional extra `serve`: nothing here is imported by the rest of the package.
"""
