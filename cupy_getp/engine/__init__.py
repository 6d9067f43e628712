"""Engines: the interface (`base`), the factory (`factory`), and the batched getp scheduler (`scheduler`).

Nothing is imported here, so importing the interface never imports an engine.
"""
