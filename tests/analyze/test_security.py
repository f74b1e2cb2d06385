"""Security and destination analyzers: authorization policies, principals, mTLS conflicts,
DestinationRule TLS and subsets, ServiceEntries."""

from __future__ import annotations

from .conftest import pairs, run

MESH = """
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio-injection: enabled}}
---
apiVersion: v1
kind: Service
metadata: {name: reviews, namespace: shop}
spec:
  selector: {app: reviews}
  ports: [{name: http, port: 9080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: reviews-v1, namespace: shop}
spec:
  selector: {matchLabels: {app: reviews, version: v1}}
  template:
    metadata: {labels: {app: reviews, version: v1}}
    spec: {serviceAccountName: bookinfo-reviews, containers: [{name: reviews, image: reviews}]}
"""


def policy(name: str, spec: str, ns: str = "shop") -> str:
    return f"""
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {{name: {name}, namespace: {ns}}}
spec:
{spec}
"""


def test_authorization_policies():
    msgs = run(
        MESH
        + policy(
            "ok",
            "  selector: {matchLabels: {app: reviews}}\n  rules: [{from: [{source: {namespaces: [shop, 'sh*']}}]}]",
        )
        + policy("no-pods", "  selector: {matchLabels: {app: ratings}}")
        + policy("empty-ns", "  rules: [{}]", ns="empty")
        + policy("bad-ns", "  rules: [{from: [{source: {notNamespaces: [prod, '*-test']}}]}]"),
        "auth.AuthorizationPoliciesAnalyzer",
    )
    assert pairs(msgs) == {
        ("IST0127", "AuthorizationPolicy shop/no-pods"): 1,
        ("IST0127", "AuthorizationPolicy empty/empty-ns"): 1,
        ("IST0101", "AuthorizationPolicy shop/bad-ns"): 2,
    }
    assert sorted(m.text for m in msgs if m.code == "IST0101") == [
        'Referenced namespace not found: "*-test"',
        'Referenced namespace not found: "prod"',
    ]


def test_principals():
    msgs = run(
        MESH
        + policy(
            "p",
            "  rules:\n  - from:\n    - source:\n        principals:\n"
            "        - cluster.local/ns/shop/sa/bookinfo-reviews\n"
            "        - cluster.local/ns/shop/sa/nobody\n"
            "        - cluster.local/ns/ghost/sa/x\n"
            "        - other.domain/ns/shop/sa/bookinfo-reviews\n"
            "        - cluster.local/ns/shop/sa/*\n",
        ),
        "auth.PrincipalAnalyzer",
    )
    assert sorted(m.text for m in msgs) == [
        'Referenced principal not found: "cluster.local/ns/ghost/sa/x"',
        'Referenced principal not found: "cluster.local/ns/shop/sa/nobody"',
        'Referenced principal not found: "other.domain/ns/shop/sa/bookinfo-reviews"',
    ]


PLAINTEXT = """
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: plain, namespace: shop}
spec: {mtls: {mode: DISABLE}}
"""


def test_identity_rules_without_mtls_have_no_effect():
    deny = policy(
        "deny",
        "  action: DENY\n  selector: {matchLabels: {app: reviews}}\n"
        "  rules: [{from: [{source: {principals: [cluster.local/ns/shop/sa/bookinfo-reviews]}}]}]",
    )
    msgs = run(MESH + deny + PLAINTEXT, "auth.PrincipalAnalyzer")
    assert [(m.code, m.resource) for m in msgs] == [("IST0167", "AuthorizationPolicy shop/deny")]
    assert "PeerAuthentication shop/plain disables mutual TLS" in msgs[0].text
    assert run(MESH + deny, "auth.PrincipalAnalyzer") == []


def dr(mode: str, extra: str = "") -> str:
    return f"""
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: reviews, namespace: shop}}
spec:
  host: reviews
  trafficPolicy:
    tls: {{mode: {mode}}}{extra}
"""


def test_mtls_conflicts():
    strict = "\n---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata: {name: default, namespace: istio-system}\nspec: {mtls: {mode: STRICT}}\n"
    msgs = run(MESH + strict + dr("DISABLE"), "auth.MTLSAnalyzer")
    assert [m.code for m in msgs] == ["IST0113"]
    assert msgs[0].text == (
        "A DestinationRule and Policy are in conflict with regards to mTLS for host "
        'reviews.shop.svc.cluster.local. The DestinationRule "shop/reviews" specifies that mTLS must be '
        'false but the Policy object "istio-system/default" specifies STRICT.'
    )
    msgs = run(MESH + PLAINTEXT + dr("ISTIO_MUTUAL"), "auth.MTLSAnalyzer")
    assert [m.code for m in msgs] == ["IST0113"]
    assert run(MESH + strict + dr("ISTIO_MUTUAL"), "auth.MTLSAnalyzer") == []


def test_destination_rule_ca_certificates():
    msgs = run(
        MESH
        + dr(
            "SIMPLE",
            "\n    portLevelSettings:\n    - port: {number: 9080}\n      tls: {mode: MUTUAL, caCertificates: /ca.pem}"
            "\n    - port: {number: 9443}\n      tls: {mode: MUTUAL}",
        ),
        "destinationrule.CaCertificateAnalyzer",
    )
    assert [m.code for m in msgs] == ["IST0128", "IST0129"]
    assert msgs[1].text.endswith("for host: reviews at port number:9443")


def test_destination_rule_hosts_and_subsets():
    msgs = run(
        MESH
        + """
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: reviews, namespace: shop}
spec:
  host: reviews
  subsets:
  - {name: v1, labels: {version: v1}}
  - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: ghost, namespace: shop}
spec: {host: ghost.shop.svc.cluster.local}
""",
        "destinationrule.SubsetSelectPodAnalyzer",
    )
    assert pairs(msgs) == {
        ("IST0173", "DestinationRule shop/reviews"): 1,
        ("IST0174", "DestinationRule shop/ghost"): 1,
    }
    assert "The Subset v2 defined" in next(m.text for m in msgs if m.code == "IST0173")


def test_service_entries():
    def se(name: str, extra: str, ns: str = "default") -> str:
        return (
            "\n---\napiVersion: networking.istio.io/v1\nkind: ServiceEntry\n"
            f"metadata: {{name: {name}, namespace: {ns}}}\nspec:\n  hosts: [db.example.com]\n{extra}\n"
        )

    cfg = (
        se("tcp-no-address", "  ports: [{number: 5432, name: tcp, protocol: TCP}]")
        + se("http", "  ports: [{number: 5432, name: http, protocol: HTTP}]")
        + se(
            "with-address",
            "  addresses: [10.1.1.1]\n  ports: [{number: 5432, name: tcp, protocol: tcp}]",
            ns="other",
        )
    )
    msgs = run(cfg, "serviceentry.Analyzer")
    assert pairs(msgs) == {("IST0134", "ServiceEntry default/tcp-no-address"): 1}
    msgs = run(cfg, "serviceentry.ConflictingServiceEntryProtocolAnalyzer")
    assert {m.code for m in msgs} == {"IST0177"}
    assert len(msgs) == 3
    assert msgs[0].text == (
        "Multiple ServiceEntries (default/http, default/tcp-no-address, other/with-address) define the "
        'same host "db.example.com" and port 5432 with conflicting protocols (HTTP, TCP).'
    )
    auto = {
        "defaultConfig": {
            "proxyMetadata": {
                "ISTIO_META_DNS_CAPTURE": "true",
                "ISTIO_META_DNS_AUTO_ALLOCATE": "true",
            }
        }
    }
    from pilotfish.analyze import mesh_config

    assert run(cfg, "serviceentry.Analyzer", mesh=mesh_config(auto)) == []
