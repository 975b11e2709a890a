"""The study task's files on disk (the framework's JSONL formats), written from `task.generate`.

    demos.jsonl          teacher demonstrations (SFT data)
    rl_prompts.jsonl     RL prompts with constraints and the teacher's reference answer
    eval.jsonl           held-out evaluation prompts (IFEval format), disjoint from training
    eval_groups.json     evaluation key -> group (single, seen_pair, unseen_pair, unseen_triple)
    teacher_eval.jsonl   the teacher's answers to the evaluation prompts (for the analyses)
    warm.jsonl           the warm-start corpus (demonstration format)
    task.json            sizes, the teacher's pass rate and the combinations of each group
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from megatron_uniapl.data.manifest import write_text_atomic
from megatron_uniapl.study.task import (
    TaskConfig,
    TaskData,
    check_disjoint,
    combinations,
    generate,
    teacher_answer,
)

FILE_NAMES = ("demos.jsonl", "rl_prompts.jsonl", "eval.jsonl", "eval_groups.json", "teacher_eval.jsonl",
              "warm.jsonl", "task.json")
"""Every file `write_task` writes."""


def _constraints(prompt) -> dict:
    return {"instruction_id_list": [c.instruction_id for c in prompt.constraints],
            "kwargs": [c.kwargs for c in prompt.constraints]}


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)


def render_files(data: TaskData, config: TaskConfig) -> dict[str, str]:
    """File name -> content."""
    teach = random.Random(f"teacher-eval-{config.seed}")
    combos = combinations(config.seed, config.seen_pairs)
    return {
        "demos.jsonl": _jsonl([{"id": p.key, "prompt": p.text, "response": a} for p, a in data.demos]),
        "rl_prompts.jsonl": _jsonl([{"key": p.key, "prompt": p.text, **_constraints(p), "reference_response": a}
                                    for p, _, a in data.rl]),
        "eval.jsonl": _jsonl([{"key": p.key, "prompt": p.text, **_constraints(p)} for p, _ in data.eval]),
        "eval_groups.json": json.dumps({p.key: g for p, g in data.eval}, indent=1) + "\n",
        "teacher_eval.jsonl": _jsonl([{"id": p.key, "prompt": p.text,
                                       "response": teacher_answer(p, config.teacher.follow, teach)}
                                      for p, _ in data.eval]),
        "warm.jsonl": _jsonl([{"prompt": p.text, "response": a} for p, a in data.warm]),
        "task.json": json.dumps({"seed": config.seed, "demos": len(data.demos), "rl_prompts": len(data.rl),
                                 "eval": len(data.eval), "warm": len(data.warm),
                                 "teacher_follow": config.teacher.follow,
                                 "teacher_demo_pass_rate": round(data.teacher_pass_rate, 4),
                                 "combinations": {k: ["+".join(c) for c in v] for k, v in combos.items()}},
                                indent=1) + "\n",
    }


def write_task(out_dir: str | Path, config: TaskConfig = TaskConfig()) -> dict[str, Path]:
    """Generate the task, check the evaluation set is held out, and write every file."""
    data = generate(config)
    check_disjoint(data)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name, content in render_files(data, config).items():
        paths[name] = out / name
        write_text_atomic(paths[name], content)
    return paths
