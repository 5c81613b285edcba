"""What the controller keeps on the host: status, snapshots, audit log, locks, and the host's set-up.

Every write here is atomic or append-only, so a crash at any instant leaves
records a later start can read.  Records know the models; they know nothing
of the engine, git or the pass.
"""
