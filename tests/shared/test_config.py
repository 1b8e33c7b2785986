from __future__ import annotations

from pathlib import Path

import pytest

from shared.config import ConfigError, load_config_text
from shared.config.kpis import FormulaKpi, KpiKind, RatioKpi

pytestmark = pytest.mark.unit

DESIGN = Path(__file__).resolve().parents[3] / "shared" / "DESIGN.md"


def design_example() -> str:
    return DESIGN.read_text().split("```yaml")[1].split("```")[0]


@pytest.mark.skipif(not DESIGN.exists(), reason="the design contract is not beside the repo")
def test_the_design_example_is_valid() -> None:
    config = load_config_text(design_example(), env={"OPS_WEBHOOK_SECRET": "s3cret"})
    assert config.timezone == "Asia/Shanghai"
    assert [k.kind for k in config.kpis].count(KpiKind.ratio) == 2
    csat = next(k for k in config.kpis if k.name == "csat")
    assert isinstance(csat, RatioKpi)
    assert csat.numerator == "csat_happy"
    assert config.rules[0].for_.total_seconds() == 300
    assert config.channels[0].secret is not None
    assert config.channels[0].secret.get_secret_value() == "s3cret"


def problems(text: str, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config_text(text, env=env or {})
    return info.value.problems


def test_errors_carry_their_path() -> None:
    found = problems(
        """
kpis:
  - {name: orders, kind: count, event: order_completed}
  - {name: revenue, kind: sum, event: order_completed}
  - {name: aov, kind: avg, event: order_completed, field: amount}
  - {name: p, kind: percentile, event: x, field: properties.s, q: 1.5}
"""
    )
    assert "kpis[1].field: Field required" in found
    assert any(p.startswith("kpis[2].field:") and "not an event field" in p for p in found)
    assert any(p.startswith("kpis[3].q:") for p in found)


def test_cross_references_are_checked() -> None:
    found = problems(
        """
kpis:
  - {name: orders, kind: count, event: o}
  - {name: orders, kind: count, event: o}
  - {name: conv, kind: ratio, numerator: orders, denominator: visitors}
rules:
  - {name: r, kpi: nope, channels: [ops]}
"""
    )
    assert "kpis[1].name: 'orders' is already defined at kpis[0]" in found
    assert "kpis[2]: refers to unknown KPI 'visitors'" in found
    assert "rules[0].kpi: unknown KPI 'nope'" in found
    assert "rules[0].channels[0]: unknown channel 'ops'" in found


def test_unset_environment_variable_is_an_error() -> None:
    found = problems(
        "channels:\n  - {name: ops, type: webhook, url: 'http://h/x', secret: '${NOPE}'}\n"
    )
    assert found == ["channels[0].secret: environment variable NOPE is not set"]


@pytest.mark.parametrize(
    "expression", ["__import__('os')", "a ** 2", "a if b else c", "'x' + a", "a.b"]
)
def test_formula_allows_arithmetic_only(expression: str) -> None:
    found = problems(f'kpis:\n  - {{name: f, kind: formula, expression: "{expression}"}}\n')
    assert found
    assert found[0].startswith("kpis[0].expression")


def test_formula_inputs() -> None:
    config = load_config_text(
        """
kpis:
  - {name: promoters, kind: count, event: nps}
  - {name: detractors, kind: count, event: nps}
  - {name: answers, kind: count, event: nps}
  - {name: nps, kind: formula, expression: "100 * (promoters - detractors) / answers"}
"""
    )
    nps = config.kpis[3]
    assert isinstance(nps, FormulaKpi)
    assert nps.inputs == ["promoters", "detractors", "answers"]


def test_goals_need_a_coherent_shape() -> None:
    found = problems(
        """
kpis: [{name: revenue, kind: sum, event: o, field: properties.revenue}]
goals:
  - {name: a, kpi: revenue, target: 1, growth: 0.2, period: month}
  - {name: b, kpi: revenue, target: 1}
  - {name: c, kpi: revenue, target: 1, start: 2027-02-01, deadline: 2027-01-01}
"""
    )
    assert any(p.startswith("goals[0]") and "exactly one of target" in p for p in found)
    assert any(p.startswith("goals[1]") and "start and deadline" in p for p in found)
    assert any(p.startswith("goals[2]") and "deadline is before start" in p for p in found)


def test_not_yaml_says_where() -> None:
    assert problems("kpis: [\n")[0].startswith("line ")


def test_rules_and_goals_use_only_declared_dimensions() -> None:
    found = problems(
        """
kpis:
  - {name: orders, kind: count, event: o, dimensions: [source, properties.channel]}
  - {name: visits, kind: count, event: v, dimensions: [source]}
  - {name: conv, kind: ratio, numerator: orders, denominator: visits}
rules:
  - {name: ok, kpi: conv, group_by: [source]}
  - {name: bad, kpi: conv, group_by: [properties.channel]}
goals:
  - {name: g, kpi: orders, target: 5, period: month, dims: {properties.campaign: x}}
"""
    )
    assert found == [
        "rules[1].group_by[0]: KPI 'conv' does not declare dimension 'properties.channel'",
        "goals[0].dims.properties.campaign: KPI 'orders' does not declare dimension"
        " 'properties.campaign'",
    ]


@pytest.mark.parametrize(
    ("url", "whole_path", "shown"),
    [
        (
            "https://oapi.dingtalk.com/robot/send?access_token=t0k",
            True,
            "https://oapi.dingtalk.com/**********?access_token=**********",
        ),
        ("http://[::1]:8081/hook", False, "http://[::1]:8081/hook"),
        (
            "https://u:p@example.com/a/b?x=1&y=",
            False,
            "https://**********@example.com/a/b?x=**********&y=**********",
        ),
        ("https://example.com", True, "https://example.com"),
    ],
)
def test_masked_url_keeps_where_it_goes_and_hides_what_grants_access(
    url: str, whole_path: bool, shown: str
) -> None:
    from shared.config.alerting import masked_url

    assert masked_url(url, whole_path=whole_path) == shown


def test_free_text_is_a_paragraph_not_a_document() -> None:
    from shared.config.kpis import MAX_TEXT

    with pytest.raises(ConfigError) as refused:
        load_config_text(
            "kpis:\n  - {name: orders, kind: count, event: o, description: '"
            + "x" * (MAX_TEXT + 1)
            + "'}\n"
        )
    assert "kpis[0].description" in str(refused.value)


def test_one_rule_for_names_and_errors_that_say_which_characters() -> None:
    """Channels refused `ops-oncall` while rules took `checkout-collapse`; only KPI names,
    which formulas use, stay identifiers."""
    config = load_config_text(
        """
kpis: [{name: orders, kind: count, event: order_completed}]
channels: [{name: ops-oncall, type: webhook, url: "http://example.com/hook"}]
rules:
  - {name: checkout-collapse, kpi: orders, window: 5m, op: "<", value: 1,
     channels: [ops-oncall]}
"""
    )
    assert [c.name for c in config.channels] == ["ops-oncall"]
    with pytest.raises(ConfigError) as refused:
        load_config_text("kpis: [{name: ops-orders, kind: count, event: order_completed}]")
    [problem] = refused.value.problems
    assert problem.startswith("kpis[0].name: 'ops-orders' is not a valid name")
    assert "no '-'" in problem
    assert "Value error" not in problem


def test_apply_prints_user_text_exactly(tmp_path: Path) -> None:
    """Rich markup ate `[x]` from names and patterns in `pacekeeper apply`'s errors."""
    from typer.testing import CliRunner

    from services.cli import app

    file = tmp_path / "bad [1].yaml"
    file.write_text("kpis: [{name: 'Orders-[x]', kind: count, event: order}]\n")
    result = CliRunner().invoke(app, ["apply", "-f", str(file), "--dry-run"])
    assert result.exit_code == 1
    flat = " ".join(result.output.split())  # rich wraps long lines
    assert "bad [1].yaml: kpis[0].name: 'Orders-[x]' is not a valid name" in flat
    assert result.output.endswith("\n")
