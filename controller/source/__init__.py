"""The manifest repository: a bare git cache, fetched and read by commit (``git``)."""
