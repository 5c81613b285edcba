"""The local API: routes, their authentication, the bounded HTTP/1.1 server and the status page.

An entry point like the command line: it calls the environment's service and
reads the records, and nothing below imports it.
"""
