"""The engine: a GPU worker process (`worker`), its parent-side `supervisor`, and the `claim_loop` that feeds
it from the job queue. Import the modules you need; this package imports nothing on purpose (the worker
process must not pull in storage, and the chat process must not pull in torch)."""
