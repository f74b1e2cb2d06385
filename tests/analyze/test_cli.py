"""``pilotfish analyze``: output format, exit codes, inputs."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest
import yaml

from pilotfish.cli.main import main

from .conftest import ANALYZE_DATA, BOOKINFO, needs_shared

LINE = re.compile(r"^(Error|Warning|Info) \[IST\d{4}\] \(\w+ [\w.-]+(/[\w.-]+)? \S+:\d+\) .+$")

BROKEN = """\
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
  - route:
    - destination:
        host: reviews
        subset: v4
"""


def analyze_cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(["analyze", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_line_format_and_exit_code(tmp_path, capsys):
    f = tmp_path / "reviews.yaml"
    f.write_text(BROKEN)
    code, out, err = analyze_cli(
        capsys, "-f", str(f), "--analyzer", "virtualservice.DestinationRuleAnalyzer"
    )
    assert code == 79
    assert out.splitlines() == [
        f'Error [IST0101] (VirtualService default/reviews {f}:10) Referenced host+subset in destinationrule not found: "reviews+v4"'
    ]
    assert "Error: Analyzers found issues when analyzing namespace: default." in err


def test_thresholds(tmp_path, capsys):
    f = tmp_path / "svc.yaml"
    f.write_text(
        "apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {selector: {app: s}, ports: [{port: 8080}]}\n"
    )
    code, out, err = analyze_cli(capsys, str(f))
    assert code == 0 and out.startswith("Info [IST0118] (Service default/s ")
    code, out, err = analyze_cli(capsys, str(f), "--failure-threshold", "Info")
    assert code == 79
    code, out, err = analyze_cli(capsys, str(f), "--output-threshold", "Warning")
    assert code == 0 and out == "" and "\u2714 No validation issues found" in err
    code, out, err = analyze_cli(capsys, str(f), "--failure-threshold", "Fatal")
    assert code == 64


def test_json_and_yaml_output(tmp_path, capsys):
    f = tmp_path / "reviews.yaml"
    f.write_text(BROKEN)
    code, out, _ = analyze_cli(
        capsys, str(f), "-o", "json", "--analyzer", "virtualservice.DestinationRuleAnalyzer"
    )
    assert code == 79
    doc = json.loads(out)
    assert doc == [
        {
            "code": "IST0101",
            "documentationUrl": "https://istio.io/latest/docs/reference/config/analysis/ist0101/?ref=istioctl-analyze",
            "level": "Error",
            "message": 'Referenced host+subset in destinationrule not found: "reviews+v4"',
            "origin": "VirtualService default/reviews",
            "reference": f"{f}:10",
        }
    ]
    assert out.startswith('[\n\t{\n\t\t"code": "IST0101",')
    code, out, _ = analyze_cli(
        capsys, str(f), "-o", "yaml", "--analyzer", "virtualservice.DestinationRuleAnalyzer"
    )
    assert yaml.safe_load(out) == doc


def test_namespaces(tmp_path, capsys):
    f = tmp_path / "reviews.yaml"
    f.write_text(BROKEN.replace("  name: reviews\n", "  name: reviews\n  namespace: shop\n"))
    args = ("--analyzer", "virtualservice.DestinationRuleAnalyzer")
    assert analyze_cli(capsys, str(f), *args)[0] == 0  # only namespace "default" is reported
    code, out, _ = analyze_cli(capsys, str(f), "-n", "shop", *args)
    assert code == 79 and "(VirtualService shop/reviews" in out
    code, out, err = analyze_cli(capsys, str(f), "-A", *args)
    assert code == 79 and "when analyzing all namespaces" in err


def test_suppress(tmp_path, capsys):
    f = tmp_path / "reviews.yaml"
    f.write_text(BROKEN)
    code, out, err = analyze_cli(
        capsys, str(f), "-S", "IST0101=VirtualService default/*", "-S", "IST9999=x"
    )
    assert code == 0
    assert "IST0101" not in out
    assert "unknown message code" in err


def test_load_errors_name_file_and_line(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("apiVersion: v1\nkind: Service\nmetadata: {name: [\n")
    code, out, err = analyze_cli(capsys, str(bad))
    assert code == 65
    assert f"{bad}:4" in err or f"{bad}:3" in err
    assert analyze_cli(capsys, str(tmp_path / "missing.yaml"))[0] == 65


def test_usage_errors(capsys):
    assert analyze_cli(capsys)[0] == 64
    assert analyze_cli(capsys, "-f", ".", "--analyzer", "no.SuchAnalyzer")[0] == 64


def test_directories(tmp_path, capsys):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "reviews.yaml").write_text(BROKEN)
    (tmp_path / "notes.txt").write_text("not yaml")
    args = ("--analyzer", "virtualservice.DestinationRuleAnalyzer")
    code, out, err = analyze_cli(capsys, "-f", str(tmp_path), *args)
    assert code == 0 and "Skipping file" in err
    code, out, _ = analyze_cli(capsys, "-R", "-f", str(tmp_path), *args)
    assert code == 79 and "IST0101" in out


def test_list_analyzers(capsys):
    code, out, _ = analyze_cli(capsys, "--list-analyzers")
    assert code == 0
    assert "* virtualservice.DestinationHostAnalyzer:\n    Checks the destination hosts" in out
    assert "envoyfilter.EnvoyPatchAnalyzer" in out.split("Not applicable to Pilotfish")[1]


@needs_shared
def test_bookinfo(capsys):
    code, out, err = analyze_cli(
        capsys,
        "-f",
        str(BOOKINFO / "bookinfo.yaml"),
        "-f",
        str(BOOKINFO / "destination-rule-all.yaml"),
        "-f",
        str(BOOKINFO / "virtual-service-all-v1.yaml"),
    )
    lines = out.splitlines()
    assert lines and all(LINE.match(line) for line in lines), lines
    # bookinfo.yaml deploys v1 of details and ratings only: the v2 subsets select no pods.
    assert any(
        "(DestinationRule default/details" in line and "Subset v2 " in line for line in lines
    )
    assert not any("IST0101" in line for line in lines)
    assert code == 79


@needs_shared
def test_bookinfo_with_its_gateway_is_clean(capsys):
    code, out, err = analyze_cli(
        capsys, str(BOOKINFO / "bookinfo.yaml"), str(BOOKINFO / "bookinfo-gateway.yaml")
    )
    assert (code, out) == (0, "")
    assert "\u2714 No validation issues found" in err


@needs_shared
def test_istioctl_public_gateway(capsys):
    f = ANALYZE_DATA / "istioctl-testdata" / "public-gateway.yaml"
    assert analyze_cli(capsys, "-A", "--failure-threshold", "Error", str(f))[0] == 0


@needs_shared
def test_istioctl_specific_analyzer(capsys):
    f = str(ANALYZE_DATA / "istioctl-testdata" / "specific-analyzer.yaml")
    assert analyze_cli(capsys, "--analyzer", "gateway.ConflictingGatewayAnalyzer", f)[0] == 0
    from pilotfish.analyze import schema

    if schema._load_validation() is None:
        pytest.skip(
            "pilotfish.api.validation not available: the schema analyzer cannot fail this file"
        )
    assert analyze_cli(capsys, f)[0] == 79
    assert analyze_cli(capsys, "--analyzer", "schema.ValidationAnalyzer.Gateway", f)[0] == 79


def test_real_process_exit_code(tmp_path):
    f = tmp_path / "reviews.yaml"
    f.write_text(BROKEN)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pilotfish",
            "analyze",
            "--analyzer",
            "virtualservice.DestinationRuleAnalyzer",
            str(f),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 79, proc.stderr
    assert proc.stdout.startswith("Error [IST0101] (VirtualService default/reviews ")
