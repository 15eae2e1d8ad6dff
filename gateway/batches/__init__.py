"""The Files and Batch APIs, run by the gateway itself: files in the database, batches on background threads."""
