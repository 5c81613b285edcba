"""The daemon: the scheduler (interval job, signals, backoff, reload), its logs, its metrics, and systemd's
notification protocol."""
