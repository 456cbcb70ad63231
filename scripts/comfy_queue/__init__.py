"""The parts of ``scripts/queue_batch.py``: a bounded HTTP transport, a ComfyUI client that checks every reply,
safe downloads, the batch ledger and the multi-server scheduler. Python standard library only."""
