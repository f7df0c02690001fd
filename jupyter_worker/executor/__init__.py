"""The privileged executor daemon: jobs, queue, policy, store, logs, metrics, crash recovery."""
