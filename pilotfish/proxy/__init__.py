"""The data plane: one module per stage of the request path.

listener -> codec -> filters -> router -> cluster (lb, pool, outlier) -> upstream,
and back; telemetry (access log, stats) records one entry per request.
"""
