"""The code's layering: command-line modules sit on top of the library, never under it, and
the decoding engine knows policies only through decoding/policy.py."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "resps_jax"


def imported_modules(path: Path) -> set[str]:
    """Every module a file imports, at top level or inside functions."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def module_name(path: Path) -> str:
    return ".".join(path.relative_to(ROOT).with_suffix("").parts)


def cli_modules() -> set[str]:
    """The package's command lines: the modules that run `main` when executed."""
    return {module_name(p) for p in PACKAGE.rglob("*.py") if 'if __name__ == "__main__"' in p.read_text()}


def test_the_package_has_its_command_lines():
    assert {"resps_jax.generate", "resps_jax.train", "resps_jax.evaluate", "resps_jax.report",
            "resps_jax.plan", "resps_jax.train_draft"} <= cli_modules()


def test_no_module_imports_a_command_line_module():
    clis = cli_modules()
    offenders = []
    for path in [*PACKAGE.rglob("*.py"), *(ROOT / "benchmarks").rglob("*.py")]:
        for name in imported_modules(path) & clis:
            if module_name(path) != name:
                offenders.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offenders, "\n".join(offenders)


def test_decoding_imports_nothing_from_rl():
    offenders = [f"{p.relative_to(ROOT)}: {name}" for p in (PACKAGE / "decoding").rglob("*.py")
                 for name in imported_modules(p) if name.startswith("resps_jax.rl")]
    assert not offenders, offenders


def test_the_learned_and_training_free_choosers_are_policies():
    from resps_jax.decoding.policy import FunctionPolicy, IntervalRecord, Policy, as_policy
    from resps_jax.rl.adaptive import Calibration, EmaChooser, UcbChooser
    from resps_jax.rl.agent import Agent, AgentConfig

    calibration = Calibration((1.0, 1.2), (1.0, 1.6))
    actions = [(1, 0, 0), (4, 2, 2)]
    for chooser in (EmaChooser(actions, calibration), UcbChooser(actions, calibration),
                    Agent(AgentConfig(obs_dim=6, num_actions=2, hidden=(8,)))):
        assert isinstance(chooser, Policy), type(chooser).__name__
        assert as_policy(chooser) is chooser
    wrapped = as_policy(lambda taps: 1)
    assert isinstance(wrapped, FunctionPolicy) and wrapped.decide(None) == 1 and not wrapped.wants_context
    assert as_policy(None) is None
    record = IntervalRecord(1, 7, 3, 0.01)
    assert record.action == 1 and record.tokens == 7 and record.steps == 3 and tuple(record) == (1, 7, 3, 0.01)


def test_an_agent_learns_the_action_the_engine_ran():
    """Where the engine's agreed action differs from the one this process sampled, the agent's
    transition takes the agreed one and its log-prob."""
    import numpy as np

    from resps_jax.decoding.policy import IntervalRecord
    from resps_jax.rl.agent import Agent, AgentConfig

    agent = Agent(AgentConfig(obs_dim=6, num_actions=3, hidden=(8,), normalize=False), seed=3)
    taps = np.linspace(-1, 1, 6).astype(np.float32)
    picked = agent.decide(taps)
    other = (picked + 1) % 3
    agent.observe(IntervalRecord(other, 4, 2, 0.01))
    assert agent.pending[-1].action == other
    assert np.isclose(agent.pending[-1].logp, np.log(agent.probabilities(taps)[other]), atol=1e-5)
