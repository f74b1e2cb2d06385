"""``security.istio.io`` kinds: PeerAuthentication, AuthorizationPolicy, RequestAuthentication
(API versions v1 and v1beta1 share one schema)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec

from pilotfish.api.schema import MinDuration, Model
from pilotfish.api.types.common import PolicyTargetReference, WorkloadSelector
from pilotfish.api.types.meta import TypedObject

MTLSMode = Literal["UNSET", "DISABLE", "PERMISSIVE", "STRICT"]


class PeerMTLS(Model):
    """``UNSET`` inherits from the parent (namespace, then mesh); the mesh default is PERMISSIVE."""

    mode: MTLSMode = "UNSET"


class PeerAuthenticationSpec(Model):
    selector: WorkloadSelector | None = None
    mtls: PeerMTLS | None = None
    port_level_mtls: Annotated[dict[str, PeerMTLS], msgspec.Meta(min_length=1)] | None = None

    def port_mtls(self) -> dict[int, PeerMTLS]:
        """``portLevelMtls`` keyed by port number (YAML keys are strings)."""
        return {int(k): v for k, v in (self.port_level_mtls or {}).items()}


class PeerAuthentication(TypedObject):
    spec: PeerAuthenticationSpec = msgspec.field(default_factory=PeerAuthenticationSpec)
    status: Any = None


_SA = Annotated[str, msgspec.Meta(max_length=320)]


class Source(Model):
    principals: list[str] | None = None
    not_principals: list[str] | None = None
    request_principals: list[str] | None = None
    not_request_principals: list[str] | None = None
    namespaces: list[str] | None = None
    not_namespaces: list[str] | None = None
    service_accounts: Annotated[list[_SA], msgspec.Meta(max_length=16)] | None = None
    not_service_accounts: Annotated[list[_SA], msgspec.Meta(max_length=16)] | None = None
    ip_blocks: list[str] | None = None
    not_ip_blocks: list[str] | None = None
    remote_ip_blocks: list[str] | None = None
    not_remote_ip_blocks: list[str] | None = None
    trust_domains: list[str] | None = None
    not_trust_domains: list[str] | None = None


class Operation(Model):
    hosts: list[str] | None = None
    not_hosts: list[str] | None = None
    ports: list[str] | None = None
    not_ports: list[str] | None = None
    methods: list[str] | None = None
    not_methods: list[str] | None = None
    paths: list[str] | None = None
    not_paths: list[str] | None = None


class RuleFrom(Model):
    source: Source | None = None


class RuleTo(Model):
    operation: Operation | None = None


class Condition(Model):
    key: str
    values: list[str] | None = None
    not_values: list[str] | None = None


class Rule(Model):
    """All of ``from``, ``to`` and ``when`` must match; ``None`` (omitted) matches anything,
    which differs from an empty list (an error)."""

    from_: Annotated[list[RuleFrom], msgspec.Meta(max_length=512)] | None = msgspec.field(default=None, name="from")
    to: list[RuleTo] | None = None
    when: list[Condition] | None = None


class ExtensionProvider(Model):
    name: str = ""


class AuthorizationPolicySpec(Model):
    selector: WorkloadSelector | None = None
    target_ref: PolicyTargetReference | None = None
    target_refs: Annotated[list[PolicyTargetReference], msgspec.Meta(max_length=16)] = []
    rules: Annotated[list[Rule], msgspec.Meta(max_length=512)] | None = None
    action: Literal["ALLOW", "DENY", "AUDIT", "CUSTOM"] = "ALLOW"
    provider: ExtensionProvider | None = None


class AuthorizationPolicy(TypedObject):
    spec: AuthorizationPolicySpec = msgspec.field(default_factory=AuthorizationPolicySpec)
    status: Any = None


_NONEMPTY = Annotated[str, msgspec.Meta(min_length=1)]


class JWTHeader(Model):
    name: _NONEMPTY
    prefix: str = ""


class ClaimToHeader(Model):
    header: Annotated[str, msgspec.Meta(min_length=1, pattern=r"^[-_A-Za-z0-9]+$")]
    claim: _NONEMPTY


_URI = Annotated[str, msgspec.Meta(min_length=1, max_length=2048)]


class JWTRule(Model):
    """How to find and check one issuer's JWTs. With no ``fromHeaders``/``fromParams``, the token
    is read from ``Authorization: Bearer <token>`` and the ``access_token`` query parameter."""

    issuer: _NONEMPTY | None = None
    audiences: list[_NONEMPTY] = []
    jwks_uri: _URI | None = None
    jwks_uri_legacy: _URI | None = msgspec.field(default=None, name="jwks_uri")
    jwks: str | None = None
    from_headers: list[JWTHeader] = []
    from_params: list[_NONEMPTY] = []
    from_cookies: list[_NONEMPTY] = []
    output_payload_to_header: str = ""
    forward_original_token: bool = False
    output_claim_to_headers: list[ClaimToHeader] = []
    space_delimited_claims: Annotated[list[_NONEMPTY], msgspec.Meta(max_length=64)] = []
    timeout: MinDuration | None = None  # 5s by default

    _oneofs = (("jwksUri", "jwks_uri", "jwks"),)

    @property
    def effective_jwks_uri(self) -> str | None:
        return self.jwks_uri or self.jwks_uri_legacy


class RequestAuthenticationSpec(Model):
    selector: WorkloadSelector | None = None
    target_ref: PolicyTargetReference | None = None
    target_refs: Annotated[list[PolicyTargetReference], msgspec.Meta(max_length=16)] = []
    jwt_rules: Annotated[list[JWTRule], msgspec.Meta(max_length=4096)] = []


class RequestAuthentication(TypedObject):
    spec: RequestAuthenticationSpec = msgspec.field(default_factory=RequestAuthenticationSpec)
    status: Any = None
