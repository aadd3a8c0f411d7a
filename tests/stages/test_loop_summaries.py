"""The loop's per-iteration evaluations and training summaries reach TensorBoard once each,
with the run's hyper-parameters; the stages are stand-ins that write their markers (the real
stages are exercised by tests/stages/test_loop.py)."""

from __future__ import annotations

import json

from umr_jax.demo.cli import demo_config
from umr_jax.stages import train
from umr_jax.stages.folder import write_json
from umr_jax.stages.loop import UmrLoop
from umr_jax.stages.steps import Retriever
from umr_jax.training.summaries import read_hparams, read_scalars


class StandInLoop(UmrLoop):
    """Each stage writes the marker the loop waits for; evaluation and training say how far along
    the iteration is (R@5kt 20 + 5 i, the best dev rank 3 - i)."""

    runs: list

    def encode(self, retriever, folder):
        self.runs.append("encode")
        write_json(folder / "manifest.json", {})

    def index(self, embeddings, folder):
        write_json(folder / "index.json", {})

    def retrieve(self, retriever, index_dir, questions_path, output):
        output.write_text("")

    def evaluate(self, retrieved, output):
        i = int(retrieved.parent.name.removeprefix("iter"))
        report = {"r@2kt": {"ja": 10.0 + i, "average": 12.0 + 5 * i}, "r@5kt": {"ja": 18.0, "average": 20.0 + 5 * i},
                  "counted": {"ja": 16}, "tokenizer": "nltk"}
        write_json(output, report)
        return report

    def score(self, retrieved, output):
        write_json(output / "manifest.json", {})

    def train(self, retriever, labels, dev_labels, folder):
        i = int(folder.parent.name.removeprefix("iter"))
        summary = {"reason": "done", "steps": 7, "best": {"step": 7, "teacher_best_mean_rank": 3.0 - i}, "final_dir": str(folder)}
        write_json(folder / train.DONE, {"retriever": Retriever(str(folder), str(folder)).to_json(), "summary": summary})


def test_each_iteration_reaches_tensorboard_once(tmp_path):
    config = demo_config(str(tmp_path / "run"))
    with config.unlocked():
        config.loop.update(dev_questions="dev.jsonl", eval_gold="dev.jsonl")
    loop = StandInLoop(config)
    loop.runs = []
    loop.run(2)
    board = tmp_path / "run" / "tensorboard"
    expected = {"eval/r@5kt/average": [(0, 20.0), (1, 25.0), (2, 30.0)], "eval/r@2kt/ja": [(0, 10.0), (1, 11.0), (2, 12.0)],
                "train/steps": [(0, 7.0), (1, 7.0)], "train/best/teacher_best_mean_rank": [(0, 3.0), (1, 2.0)]}
    series = read_scalars(board)
    assert {tag: series[tag] for tag in expected} == expected
    assert "eval/tokenizer" not in series and "train/best/step" not in series
    values, tags = read_hparams(board)
    assert tags == ["eval/r@2kt/average", "eval/r@5kt/average"]
    assert values["iterations"] == 2.0 and values["train.learning_rate"] == config.train.learning_rate
    assert values["loop.scorer"] == config.loop.scorer and values["score.top_k"] == config.score.top_k

    # Rerun: every stage is done, nothing is written twice; a third iteration adds its own file.
    before = sorted(p.name for p in board.iterdir())
    loop.run(2)
    assert sorted(p.name for p in board.iterdir()) == before and loop.runs == ["encode"] * 3
    loop.run(3)
    series = read_scalars(board)
    assert series["eval/r@5kt/average"] == [(0, 20.0), (1, 25.0), (2, 30.0), (3, 35.0)]
    assert series["train/best/teacher_best_mean_rank"] == [(0, 3.0), (1, 2.0), (2, 1.0)]  # iteration 2 trained now
    assert read_hparams(board)[0]["iterations"] == 3.0  # the changed set replaced the earlier one
    assert len([p for p in board.iterdir() if "hparams" in p.name]) == 1
    assert json.loads((tmp_path / "run" / "history.json").read_text())[3]["eval"]["r@5kt"]["average"] == 35.0
