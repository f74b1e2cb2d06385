"""Configuration analysis: Istio's analyzers, emitting Istio's IST message codes.

Public API::

    from pilotfish.analyze import analyze, all_analyzers, Message, Level

    result = analyze(resources)                      # any iterable of api.loader.Resource
    result = analyze(store.list(), namespace="default", analyzers=["virtualservice.GatewayAnalyzer"])
    for msg in result.messages:                      # sorted and de-duplicated like istioctl
        print(msg)                                   # Error [IST0101] (VirtualService ns/name f.yaml:12) ...
        msg.code, msg.level, msg.resource, msg.text, msg.to_dict()

Analyzers are pure functions of a :class:`Context` (no I/O), so the control plane can run them
over its live config store as well as the CLI over files.
"""

from .core import Analyzer, Context, Message, Obj
from .meshconfig import load_mesh_config, mesh_config
from .messages import BY_CODE, MESSAGES, Level, MessageType
from .not_applicable import NOT_APPLICABLE
from .runner import AnalysisResult, all_analyzers, analyze, build_context, default_analyzers

__all__ = [
    "BY_CODE",
    "MESSAGES",
    "NOT_APPLICABLE",
    "AnalysisResult",
    "Analyzer",
    "Context",
    "Level",
    "Message",
    "MessageType",
    "Obj",
    "all_analyzers",
    "analyze",
    "build_context",
    "default_analyzers",
    "load_mesh_config",
    "mesh_config",
]
