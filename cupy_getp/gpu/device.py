"""Device selection (placeholder until the GPU engine lands)."""


def probe() -> str | None:
    """None when a GPU engine can run here, else the reason it cannot."""
    return "the cupy engine is not available yet"
