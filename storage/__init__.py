"""Jobs and images that outlive the process: the only meeting point of the chat side and the engine.

Imports nothing from `bot`, `engine` or `models`. See `storage.queue.JobQueue` for the operations.
"""
