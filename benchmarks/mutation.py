"""Mutation testing of the wiring modules: does the suite notice when the code that connects the
formulas to the study's numbers is wrong?

Two modes, each applying one change at a time to a copy of the repository and running the tests
that should notice it (``pytest -x`` in a subprocess; a failing test "kills" the mutant):

* ``known``: the nine one-line wiring bugs of issue 10 (batch-norm mode of the sweep, the
  compiled-gradient cache, fold roles, z-score order, monitored quantity, plateau factor, attack
  loss, i-FGSM step, PSNR/SSIM data range). Each must be killed.
* ``mutants``: mutants generated from the AST of the wiring functions (experiment settings, units
  and runner, the input pipeline, the attack runner and its compiled-function cache, training,
  scoring, tables) with the usual
  operators: comparison and boolean operators flipped, ``True``/``False`` swapped, numbers changed,
  arithmetic swapped, ``not`` dropped, keyword strings altered, ``return x`` turned into
  ``return None``. Log and error-message text is not mutated (no test should pin prose).

It is our equivalent of ``mutmut``, which cannot be used here: ``mutmut`` 3 runs the tests of
every mutant in a process forked from one that already initialised TensorFlow, and TensorFlow's
thread pools do not survive a fork. Too slow for CI (minutes per module); run it before
changing the wiring, and record the score in ``docs/testing.md``.

    python benchmarks/mutation.py known
    python benchmarks/mutation.py mutants --jobs 2 [--module runner ...] [--list]
"""

from __future__ import annotations

import argparse
import ast
import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FULL = "<all tests of the files, slow ones included>"
SHARED = REPO.parent / "shared"


@dataclass(frozen=True)
class Target:
    """Functions (or classes, or module-level names) of one module and the tests that guard them."""

    module: str
    names: tuple[str, ...]
    tests: tuple[str, ...]
    select: str = ""  # a pytest -k expression, to leave out tests that cannot see these functions


TARGETS = {
    "settings": Target(
        "tfrobseg/experiment/settings.py", ("BUILTIN_PRESET", "Settings", "default_out_dir", "resolve_settings"),
        ("tests/experiment/test_settings.py",),
    ),
    "units": Target(
        "tfrobseg/experiment/units.py", ("load_split", "unit_patients", "UnitRecord"),
        ("tests/experiment/test_units.py", "tests/experiment/test_runner.py"),
    ),
    "runner": Target(
        "tfrobseg/experiment/runner.py", ("load_data", "unit_datasets", "train", "attack_and_score", "record", "run_unit"),
        ("tests/experiment/test_runner.py",),
    ),
    "pipeline": Target(
        "tfrobseg/dataset/pipeline.py", ("make_dataset", "resize_element"),
        ("tests/dataset/test_resize.py", "tests/dataset/test_pipeline.py", "tests/experiment/test_runner.py"),
    ),
    "attack_runner": Target(
        "tfrobseg/attacks/runner.py", ("_rebatch", "_pad", "_each_epsilon", "_check_call", "_results", "attack_dataset"),
        ("tests/attacks/test_attack_runner.py",),
    ),
    "attack_cache": Target(
        "tfrobseg/attacks/gradient.py", ("_loss_key", "compiled", "_build_gradient_sign", "_build_predict"),
        ("tests/attacks/test_attack_runner.py", "tests/attacks/test_attack_fgsm.py", "tests/attacks/test_attack_gradient.py"), "not trained and not every_model and not targeted and not float16 and not target_helpers",
    ),
    "sweep": Target(
        "tfrobseg/attacks/fgsm.py", ("_build_sweep_forward", "fgsm_sweep"),
        ("tests/attacks/test_attack_runner.py", "tests/attacks/test_attack_fgsm.py", "tests/attacks/test_attack_gradient.py"), "not trained and not every_model and not targeted and not float16 and not target_helpers",
    ),
    "training": Target(
        "tfrobseg/training/fit.py", ("train_model",), ("tests/training/test_fit.py",), "not mirrored",
    ),
    "train_config": Target(
        "tfrobseg/training/config.py", ("TrainConfig",), ("tests/training/test_fit.py",), "not mirrored",
    ),
    "callbacks": Target(
        "tfrobseg/training/callbacks.py", ("protocol_callbacks",), ("tests/training/test_fit.py",), "not mirrored",
    ),
    "scoring": Target(
        "tfrobseg/experiment/scoring.py", ("load_volumes", "volume_metrics", "evaluate_attack_stream"),
        ("tests/experiment/test_scoring.py",),
    ),
    "tables": Target(
        "tfrobseg/reporting/tables.py", ("cell_means", "summarize_table", "most_robust_loss"),
        ("tests/reporting/test_tables.py", "tests/reporting/test_stats.py"),
    ),
}


@dataclass(frozen=True)
class Mutant:
    """One change: ``old`` → ``new`` in ``module`` (``index``: which occurrence, for generated ones)."""

    name: str
    module: str
    old: str
    new: str
    tests: tuple[str, ...]
    line: int = 0
    select: str = ""


# --------------------------------------------------------------------------- the nine known bugs
KNOWN = (
    Mutant("sweep forward in training mode", "tfrobseg/attacks/fgsm.py",
           "pred = tf.cast(model(flat, training=False), tf.float32)", "pred = tf.cast(model(flat, training=True), tf.float32)",
           ("tests/attacks/test_attack_fgsm.py", "tests/attacks/test_attack_gradient.py", "tests/attacks/test_attack_runner.py")),
    Mutant("gradient cache ignores the attack loss", "tfrobseg/attacks/gradient.py",
           "key = (kind, None if loss is None else _loss_key(loss), bool(jit_compile))", "key = (kind, bool(jit_compile))",
           ("tests/attacks/test_attack_fgsm.py", "tests/attacks/test_attack_gradient.py", "tests/attacks/test_attack_runner.py")),
    Mutant("cross-validation swaps the fold roles", "tfrobseg/experiment/units.py",
           'UnitPatients(manifest.patients_of("train", exclude_fold=unit.fold), val,\n'
           '                        manifest.patients_of("train", fold=unit.fold))',
           'UnitPatients(manifest.patients_of("train", fold=unit.fold), val,\n'
           '                        manifest.patients_of("train", exclude_fold=unit.fold))',
           ("tests/experiment/test_units.py", "tests/experiment/test_runner.py")),
    Mutant("z-score after smoothing", "tfrobseg/dataset/prepare.py",
           "smoothed = pp.gaussian_smooth(z, config.smoothing_sigma, unit=config.smoothing_unit,\n"
           "                                  spacing_yx=config.spacing_xyz[1::-1])",
           "smoothed = pp.zscore(pp.gaussian_smooth(volume, config.smoothing_sigma, unit=config.smoothing_unit,\n"
           "                                  spacing_yx=config.spacing_xyz[1::-1]))",
           ("tests/dataset/test_prepare.py",)),
    Mutant("callbacks watch loss, not val_loss", "tfrobseg/training/fit.py",
           'monitor = "val_loss" if val_data is not None else "loss"', 'monitor = "loss"',
           ("tests/training/test_fit.py",)),
    Mutant("protocol plateau factor 0.1", "tfrobseg/study.py",
           "PLATEAU_FACTOR: float = 0.5", "PLATEAU_FACTOR: float = 0.1", ("tests/experiment/test_settings.py",)),
    Mutant("protocol always attacks with BCE", "tfrobseg/experiment/runner.py",
           "loss=get_loss(attack_loss),", 'loss=get_loss("bce"),', ("tests/experiment/test_runner.py",)),
    Mutant("i-FGSM default step 2 eps / steps", "tfrobseg/attacks/iterative.py",
           "step_factor=1.0, direction=1.0", "step_factor=2.0, direction=1.0",
           ("tests/attacks/test_attack_iterative.py",)),
    Mutant("PSNR/SSIM range of the adversarial volume", "tfrobseg/experiment/scoring.py",
           "data_range = float(volume.image.max() - volume.image.min()) or 1.0",
           "data_range = float(adversarial.max() - adversarial.min()) or 1.0",
           ("tests/experiment/test_scoring.py",)),
)


# --------------------------------------------------------------------------- generated mutants
_FLIP_CMP = {ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt, ast.Eq: ast.NotEq,
             ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In, ast.Is: ast.IsNot, ast.IsNot: ast.Is}
_FLIP_BIN = {ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult, ast.FloorDiv: ast.Div}
_QUIET_CALLS = {"print", "_log", "log", "warn", "set_postfix", "set_description", "append_log"}


def _is_quiet(node: ast.AST) -> bool:
    """Message text: raise statements, f-strings, print/log calls (not worth a mutant)."""
    if isinstance(node, (ast.Raise, ast.JoinedStr, ast.Assert)):
        return True
    if isinstance(node, ast.Call):
        func = node.func
        name = func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""
        return name in _QUIET_CALLS
    return False


def _is_key(parent: ast.AST, child: ast.AST) -> bool:
    """Strings that are not behaviour: docstrings and the keys of records, rows and dicts.

    Renaming a key only renames a column or a field (the schemas' own concern) or crashes at once.
    """
    if isinstance(parent, ast.Expr):  # a docstring
        return True
    if isinstance(parent, ast.Subscript) and child is parent.slice:
        return True
    if isinstance(parent, ast.Dict) and any(child is k for k in parent.keys):
        return True
    if isinstance(parent, ast.Call) and parent.args and child is parent.args[0]:
        func = parent.func
        return isinstance(func, ast.Attribute) and func.attr in ("get", "pop", "setdefault")
    return isinstance(parent, (ast.Tuple, ast.List, ast.Set)) and all(isinstance(e, ast.Constant) for e in parent.elts)


def _points(tree: ast.AST, names: tuple[str, ...]) -> Iterator[tuple[int, ast.AST, str]]:
    """(id, node, kind) of every mutation point inside the named top-level definitions."""
    counter = 0

    def visit(node: ast.AST, skip_string: bool = False) -> Iterator[tuple[int, ast.AST, str]]:
        nonlocal counter
        if _is_quiet(node):
            return
        kinds = []
        if isinstance(node, ast.Compare):
            kinds += ["cmp"] * sum(type(op) in _FLIP_CMP for op in node.ops)
        elif isinstance(node, ast.BoolOp):
            kinds.append("boolop")
        elif isinstance(node, ast.BinOp) and type(node.op) in _FLIP_BIN:
            kinds.append("binop")
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            kinds.append("not")
        elif isinstance(node, ast.Return) and node.value is not None and not (
                isinstance(node.value, ast.Constant) and node.value.value is None):
            kinds.append("return")
        elif isinstance(node, ast.Constant):
            if isinstance(node.value, bool):
                kinds.append("bool")
            elif isinstance(node.value, (int, float)):
                kinds.append("number")
            elif isinstance(node.value, str) and node.value and not skip_string:
                kinds.append("string")
        for kind in kinds:
            counter += 1
            yield counter, node, kind
        children = list(ast.iter_child_nodes(node))
        if isinstance(node, (ast.Tuple, ast.List)) and all(isinstance(e, ast.Constant) for e in node.elts):
            children = children[:1]  # a literal grid (ε values, filters): one mutant stands for the rest
        for child in children:
            yield from visit(child, _is_key(node, child))

    for top in tree.body:
        if isinstance(top, (ast.FunctionDef, ast.ClassDef)) and top.name in names:
            yield from visit(top)
        elif isinstance(top, (ast.Assign, ast.AnnAssign)):
            targets = top.targets if isinstance(top, ast.Assign) else [top.target]
            if any(isinstance(t, ast.Name) and t.id in names for t in targets):
                yield from visit(top)


def _mutate(node: ast.AST, kind: str, nth: int) -> None:
    """Apply the ``nth`` change of ``kind`` to ``node`` in place (no-ops are dropped by the caller)."""
    if kind == "cmp":
        flippable = [i for i, op in enumerate(node.ops) if type(op) in _FLIP_CMP]
        i = flippable[nth]
        node.ops[i] = _FLIP_CMP[type(node.ops[i])]()
    elif kind == "boolop":
        node.op = ast.Or() if isinstance(node.op, ast.And) else ast.And()
    elif kind == "binop":
        node.op = _FLIP_BIN[type(node.op)]()
    elif kind == "bool":
        node.value = not node.value
    elif kind == "number":
        node.value = node.value + 1 if isinstance(node.value, int) else (node.value * 2 if node.value else 1.0)
    elif kind == "string":
        node.value = f"XX{node.value}XX"


def generated_mutants(key: str) -> list[Mutant]:
    """The mutants of one target, each as a whole mutated module source (``old`` is the original)."""
    target = TARGETS[key]
    source = (REPO / target.module).read_text(encoding="utf-8")
    tree = ast.parse(source)
    original = ast.unparse(tree)
    points = list(_points(tree, target.names))
    mutants, seen = [], set()
    for index, (pid, node, kind) in enumerate(points):
        nth = sum(1 for p in points[:index] if p[1] is node and p[2] == kind)
        mutated_tree = copy.deepcopy(tree)
        clone = next(n for i, n, k in _points(mutated_tree, target.names) if i == pid)
        if kind == "not":
            # Replace `not x` by `x` through its parent.
            for parent in ast.walk(mutated_tree):
                for field, value in ast.iter_fields(parent):
                    if value is clone:
                        setattr(parent, field, clone.operand)
                    elif isinstance(value, list) and any(v is clone for v in value):
                        value[[v is clone for v in value].index(True)] = clone.operand
        elif kind == "return":
            clone.value = ast.Constant(None)
        else:
            _mutate(clone, kind, nth)
        code = ast.unparse(mutated_tree)
        if code == original or code in seen:
            continue
        seen.add(code)
        line = getattr(node, "lineno", 0)
        snippet = source.splitlines()[line - 1].strip() if line else ""
        mutants.append(Mutant(f"{key}:{line}:{kind}#{len(mutants) + 1} {snippet[:70]}", target.module, "", code,
                              target.tests, line, target.select))
    return mutants


# --------------------------------------------------------------------------- running
def _copy_repo(dest: Path) -> Path:
    repo = dest / "repo"
    ignore = shutil.ignore_patterns(".git", "__pycache__", "*.egg-info", "data", "results", ".pytest_cache", "mutants")
    shutil.copytree(REPO, repo, ignore=ignore)
    if SHARED.exists():
        (dest / "shared").symlink_to(SHARED)
    return repo


def _apply(repo: Path, mutant: Mutant) -> None:
    path = repo / mutant.module
    if not mutant.old:  # a generated mutant carries the whole module
        path.write_text(mutant.new, encoding="utf-8")
        return
    text = path.read_text(encoding="utf-8")
    if text.count(mutant.old) < 1:
        raise SystemExit(f"{mutant.name}: the line to change is not in {mutant.module} any more; update KNOWN")
    path.write_text(text.replace(mutant.old, mutant.new, 1), encoding="utf-8")


def _run_tests(repo: Path, mutant: Mutant, env: dict[str, str], timeout: int, first_failure: bool) -> dict:
    t0 = time.perf_counter()
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "0", *mutant.tests]
    if mutant.select != FULL:
        cmd += ["-m", "not slow"]
    if first_failure:
        cmd.insert(3, "-x")
    if mutant.select and mutant.select != FULL:
        cmd += ["-k", mutant.select]
    try:
        proc = subprocess.run(cmd, cwd=repo, env={**env, "PYTHONPATH": str(repo)}, capture_output=True, text=True,
                              timeout=timeout, check=False)
        # Any failing run kills the mutant (1: a test failed; 2, 3: collection or internal error).
        status = {0: "survived", 1: "killed"}.get(proc.returncode, f"killed (pytest exit {proc.returncode})")
        failed = [ln.split(" ")[1] for ln in proc.stdout.splitlines() if ln.startswith("FAILED ")]
        tail = proc.stdout.strip().splitlines()[-1:] if proc.stdout.strip() else []
    except subprocess.TimeoutExpired:
        status, failed, tail = "killed (timeout)", [], []
    return {"mutant": mutant.name, "module": mutant.module, "line": mutant.line, "status": status,
            "failed_tests": failed, "summary": tail[0] if tail else "",
            "seconds": round(time.perf_counter() - t0, 1)}


def run(mutants: list[Mutant], jobs: int, timeout: int, report: Path | None, first_failure: bool = True) -> list[dict]:
    """Run every mutant in its own copy (``jobs`` copies at once); returns one record per mutant."""
    work = Path(tempfile.mkdtemp(prefix="tfrobseg-mutation-"))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CI="", TFROBSEG_SAMPLE=str(SHARED / "data" / "prostatex-sample"))
    # One prepared tiny cohort for every run (the fixture reuses it: preparation is idempotent).
    env["TFROBSEG_TEST_COHORT"] = str(work / "cohort")
    prepare = ("import sys; from tfrobseg.dataset.synthetic import prepare_builtin; "
               "prepare_builtin(sys.argv[1], n_patients=6, seed=0)")
    subprocess.run([sys.executable, "-c", prepare, env["TFROBSEG_TEST_COHORT"]],
                   cwd=REPO, env=env, check=True, capture_output=True)
    slots = [_copy_repo(work / f"slot{i}") for i in range(jobs)]
    # Restore from the text as it was at the start, whatever happens to the checkout meanwhile.
    originals = {m.module: (slots[0] / m.module).read_bytes() for m in mutants}
    free = list(slots)
    results: list[dict] = []

    def one(mutant: Mutant) -> dict:
        repo = free.pop()
        try:
            _apply(repo, mutant)
            return _run_tests(repo, mutant, env, timeout, first_failure)
        finally:
            (repo / mutant.module).write_bytes(originals[mutant.module])
            free.append(repo)

    # The tests must pass on the unchanged code, or every mutant would look killed.
    baselines = {(m.tests, m.select): Mutant(f"baseline {' '.join(m.tests)} -k {m.select!r}", m.module, "", "",
                                              m.tests, 0, m.select) for m in mutants}
    with ThreadPoolExecutor(jobs) as pool:
        checks = list(pool.map(lambda b: _run_tests(slots[0], b, env, timeout, True), baselines.values()))
    broken = [c for c in checks if c["status"] != "survived"]
    if broken:
        raise SystemExit("the tests fail without any mutation: " + "; ".join(f"{c['mutant']}: {c['summary']}" for c in broken))
    print(f"baseline: {len(checks)} test selections pass on the unchanged code", flush=True)
    with ThreadPoolExecutor(jobs) as pool:
        for k, future in enumerate(as_completed([pool.submit(one, m) for m in mutants]), 1):
            res = future.result()
            results.append(res)
            print(f"[{k}/{len(mutants)}] {res['status']:<16} {res['seconds']:>6.1f} s  {res['mutant']}"
                  + "".join(f"\n      <- {t}" for t in res["failed_tests"]), flush=True)
            if report:
                report.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")
    shutil.rmtree(work, ignore_errors=True)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("mode", choices=("known", "mutants"))
    parser.add_argument("--module", action="append", choices=sorted(TARGETS), help="limit to these targets")
    parser.add_argument("--jobs", type=int, default=1, help="mutants tested at once (one repository copy each)")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per mutant before it counts as killed")
    parser.add_argument("--list", action="store_true", help="only list the mutants")
    parser.add_argument("--survivors-of", type=Path, default=None,
                        help="a --report of an earlier run: run its survivors again with every test of their files")
    parser.add_argument("--report", type=Path, default=None, help="write the records as JSON here (updated as it runs)")
    args = parser.parse_args(argv)
    if args.mode == "known":
        mutants = list(KNOWN)
    else:
        mutants = [m for key in (args.module or sorted(TARGETS)) for m in generated_mutants(key)]
    if args.survivors_of:
        earlier = json.loads(args.survivors_of.read_text(encoding="utf-8"))
        survivors = {r["mutant"] for r in earlier if r["status"] == "survived"}
        mutants = [Mutant(m.name, m.module, m.old, m.new, m.tests, m.line, FULL) for m in mutants if m.name in survivors]
    if args.list:
        for m in mutants:
            print(m.name)
        print(f"{len(mutants)} mutants")
        return 0
    # A known bug reports every test that catches it; a generated mutant stops at the first.
    results = run(mutants, args.jobs, args.timeout, args.report, first_failure=args.mode == "mutants")
    killed = sum(r["status"].startswith("killed") for r in results)
    print(f"\nmutation score: {killed}/{len(results)} killed ({100 * killed / max(len(results), 1):.1f} %)")
    for r in results:
        if not r["status"].startswith("killed"):
            print(f"  {r['status']}: {r['mutant']} ({r['module']}:{r['line']})")
    return 0 if killed == len(results) or args.mode == "mutants" else 1


if __name__ == "__main__":
    sys.exit(main())
