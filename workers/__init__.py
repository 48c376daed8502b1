"""arq wiring: worker settings for the realtime and backfill queues, and thin jobs."""
