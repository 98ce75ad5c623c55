"""The page's routing of joins (Overlay in pando/web/tree.js) against pando/overlay.py's, step for step.

A tab that relays must send a join where a native relay would: the same
rule (room here, else the child with the nearest free slot, then the most
free slots, then the smallest subtree, never an avoided node; a join passed
down counts against that child until its next status; an accepted join holds
its slot until the child's hello) and the same status figures. Random sequences of children joining, leaving and sending
status, joins ending, routes and summaries run through both, in Node.js; the
answers must be equal.
"""
from __future__ import annotations

import json
import random
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from pando.overlay import Accept, Forward, Overlay, Subtree, Summary, Wait

TREE_JS = Path(__file__).resolve().parent.parent / "pando" / "web" / "tree.js"

RUNNER = """
const { Overlay } = await import(process.argv[1]);
const cases = JSON.parse(await new Promise((resolve) => {
  let text = '';
  process.stdin.on('data', (chunk) => { text += chunk; });
  process.stdin.on('end', () => resolve(text));
}));
const out = cases.map(({ degree, relay, ops }) => {
  const overlay = new Overlay(degree, relay);
  return ops.map(([op, ...args]) => {
    switch (op) {
      case 'add': overlay.add(args[0], { node: args[0], relay: args[1], workers: args[2] }, args[3]); return null;
      case 'remove': overlay.remove(args[0]); return null;
      case 'update': overlay.update(args[0], args[1]); return null;
      case 'ended': overlay.joinEnded(); return null;
      case 'route': {
        const route = overlay.route(args[0], args[1], args[2]);
        return route.accept ? ['accept'] : route.forward !== undefined ? ['forward', route.forward]
          : route.wait ? ['wait'] : ['refuse'];
      }
      case 'summary': return overlay.summary(args[0]);
      default: throw new Error(op);
    }
  });
});
process.stdout.write(JSON.stringify(out));
"""


def node_command() -> list[str] | None:
    node = shutil.which("node")
    if node is None:
        return None
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=False).stdout.strip()
    major = int(version.lstrip("v").split(".")[0] or 0) if version else 0
    if major < 20:
        return None
    # tree.js is an ES module named .js, outside any package that says so.
    return [node, "--experimental-default-type=module", "--no-warnings", "--input-type=module", "-e", RUNNER]


def random_case(rng: random.Random) -> dict[str, Any]:
    degree = rng.randint(0, 4)
    relay = rng.random() < 0.9
    children: list[str] = []
    ops: list[list[Any]] = []
    for step in range(rng.randint(5, 60)):
        kind = rng.choices(["add", "remove", "update", "ended", "route", "summary"], [4, 1, 4, 1, 4, 2])[0]
        if kind == "add":
            key = f"{rng.getrandbits(64):016x}"
            children.append(key)
            ops.append(["add", key, rng.random() < 0.7, rng.randint(1, 8), rng.random() < 0.5])
        elif kind == "remove" and children:
            ops.append(["remove", children.pop(rng.randrange(len(children)))])
        elif kind == "update" and children:
            nearest = None if rng.random() < 0.3 else rng.randint(0, 3)
            ops.append(["update", rng.choice(children), {"nodes": rng.randint(1, 20), "workers": rng.randint(0, 40),
                                                         "free": rng.randint(0, 5), "depth": rng.randint(0, 4),
                                                         "nearest": nearest}])
        elif kind == "ended":
            ops.append(["ended"])
        elif kind == "route":
            avoid = rng.sample(children, k=min(len(children), rng.randint(0, 2)))
            ops.append(["route", rng.randint(1, 5), avoid, rng.choice([0, 1, 5, 32, 33])])
        else:
            ops.append(["summary", rng.randint(1, 4)])
    return {"degree": degree, "relay": relay, "ops": ops}


def python_answers(case: dict[str, Any]) -> list[Any]:
    overlay: Overlay[str] = Overlay(case["degree"], relay=case["relay"])
    out: list[Any] = []
    for op, *args in case["ops"]:
        if op == "add":
            overlay.add(args[0], Subtree(args[0], args[1], args[2]), joined=args[3])
            out.append(None)
        elif op == "remove":
            overlay.remove(args[0])
            out.append(None)
        elif op == "update":
            overlay.update(args[0], Summary(**args[1]))
            out.append(None)
        elif op == "ended":
            overlay.join_ended()
            out.append(None)
        elif op == "route":
            route = overlay.route(args[0], tuple(args[1]), args[2])
            out.append(["accept"] if isinstance(route, Accept) else
                       ["forward", route.child] if isinstance(route, Forward) else
                       ["wait"] if isinstance(route, Wait) else ["refuse"])
        else:
            out.append(vars(overlay.summary(args[0])))
    return out


def test_the_pages_overlay_routes_and_sums_up_as_pandos_does() -> None:
    command = node_command()
    if command is None:
        pytest.skip("Node.js 20 or later is not installed: the page's overlay is not compared with Python's")
    rng = random.Random(11)
    cases = [random_case(rng) for _ in range(400)]
    done = subprocess.run([*command, str(TREE_JS)], input=json.dumps(cases), capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    js = json.loads(done.stdout)
    routes = 0
    for case, answers in zip(cases, js):
        expected = python_answers(case)
        assert answers == expected, json.dumps(case)
        routes += sum(1 for op in case["ops"] if op[0] == "route")
    assert routes > 1000
    # Every kind of answer was seen.
    kinds = {answer[0] for answers in js for answer in answers if isinstance(answer, list)}
    assert kinds == {"accept", "forward", "wait", "refuse"}
