"""Curriculum and sampler files (both curriculum formats, every real file, the messages of bad
ones), the lesson state machine, the samplers' draws and the run's environment parameters."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path

import numpy as np
import pytest

from palaestra.curriculum import EnvironmentParameters, LessonState, load_curricula, load_sampler
from palaestra.curriculum.curricula import Curriculum
from palaestra.settings import ConfigError
from tests.conftest import write_yaml

WALL = """
BigWallJump:
  measure: progress
  thresholds: [0.1, 0.3, 0.5]
  min_lesson_length: 100
  signal_smoothing: true
  parameters:
    big_wall_min_height: [0.0, 4.0, 6.0, 8.0]
    big_wall_max_height: [4.0, 7.0, 8.0, 8.0]
"""


def curriculum(measure="reward", thresholds=(1.0, 2.0), min_length=3, smoothing=False) -> Curriculum:
    return Curriculum("B", measure, tuple(thresholds), min_length, smoothing,
                      {"p": tuple(float(i) for i in range(len(thresholds) + 1))}, "test")


# -- loading -----------------------------------------------------------------------------------
def test_yaml_and_json_object_load_alike(tmp_path):
    yaml_form = load_curricula(write_yaml(tmp_path / "c.yaml", WALL))
    as_json = {"BigWallJump": {"measure": "progress", "thresholds": [0.1, 0.3, 0.5], "min_lesson_length": 100,
                               "signal_smoothing": True,
                               "parameters": {"big_wall_min_height": [0.0, 4.0, 6.0, 8.0],
                                              "big_wall_max_height": [4.0, 7.0, 8.0, 8.0]}}}
    (tmp_path / "c.json").write_text(json.dumps(as_json))
    json_form = load_curricula(tmp_path / "c.json")
    c = yaml_form["BigWallJump"]
    assert c.thresholds == (0.1, 0.3, 0.5) and c.min_lesson_length == 100 and c.signal_smoothing
    assert c.values(2) == {"big_wall_min_height": 6.0, "big_wall_max_height": 8.0}
    assert c.max_lesson == 3
    assert {b: (x.measure, x.thresholds, x.parameters) for b, x in json_form.items()} == \
        {b: (x.measure, x.thresholds, x.parameters) for b, x in yaml_form.items()}


def test_folder_of_per_behavior_json_files(tmp_path):
    entry = {"measure": "reward", "thresholds": [0.5], "min_lesson_length": 10, "signal_smoothing": False,
             "parameters": {"h": [1, 2]}}
    (tmp_path / "A.json").write_text(json.dumps(entry))
    (tmp_path / "B.json").write_text(json.dumps(entry | {"measure": "progress"}))
    (tmp_path / "notes.txt").write_text("ignored")
    loaded = load_curricula(tmp_path)
    assert sorted(loaded) == ["A", "B"] and loaded["B"].measure == "progress"
    # one such file alone is named after the file
    assert list(load_curricula(tmp_path / "A.json")) == ["A"]
    # a file keyed by behavior (the 0.14 layout) among them is read as such
    (tmp_path / "C.json").write_text(json.dumps({"Wrapped": entry}))
    assert sorted(load_curricula(tmp_path)) == ["A", "B", "Wrapped"]


def test_a_curriculum_key_slipped_out_of_its_section_is_named(tmp_path):
    path = write_yaml(tmp_path / "c.yaml", """
        BigWallJump:
          measure: progress
          thresholds: [0.1]
          min_lesson_length: 10
          signal_smoothing: true
        parameters:
          big_wall_min_height: [0.0, 4.0]
        """)
    with pytest.raises(ConfigError, match=re.escape("'parameters' stands at the top level beside the behavior "
                                                    "section(s) BigWallJump: indent it under the section it belongs to")):
        load_curricula(path)


def test_a_folder_of_yaml_curricula_says_to_give_one_of_them(tmp_path):
    write_yaml(tmp_path / "wall_jump.yaml", WALL)
    with pytest.raises(ConfigError, match=r"needs one <Behavior>\.json file per behavior; it has none; it holds "
                                          r"wall_jump\.yaml: give one of those"):
        load_curricula(tmp_path)


def test_a_curriculum_folder_that_cannot_be_read_is_a_config_error(tmp_path, monkeypatch):
    def unreadable(self):
        raise PermissionError(13, "Permission denied", str(self))  # (chmod 000 binds no root: said directly)

    monkeypatch.setattr(Path, "iterdir", unreadable)
    with pytest.raises(ConfigError, match=rf"^{re.escape(str(tmp_path))}: the curriculum folder cannot be read: "
                                          "Permission denied$"):
        load_curricula(tmp_path)


def test_every_real_curriculum_and_sampler_file_loads(conformance):
    release2 = conformance / "mlagents-release2" / "config"
    for path in sorted((release2 / "curricula").glob("*.yaml")):
        for c in load_curricula(path).values():
            assert all(len(v) == c.max_lesson + 1 for v in c.parameters.values())
    wall = load_curricula(release2 / "curricula" / "wall_jump.yaml")
    old = load_curricula(conformance / "mlagents-0.13" / "config" / "curricula" / "wall-jump")
    assert sorted(wall) == ["BigWallJump", "SmallWallJump"] and sorted(old) == ["BigWallBrain", "SmallWallBrain"]
    assert old["BigWallBrain"].parameters == wall["BigWallJump"].parameters
    test = load_curricula(release2 / "curricula" / "test.yaml")["TestBrain"]
    assert test.measure == "reward" and test.values(3) == {"param1": 0.1, "param2": 15.0, "param3": 0.9}
    sampler = load_sampler(release2 / "3dball_randomize.yaml")
    assert sampler.resampling_interval == 5000 and sorted(sampler.samplers) == ["gravity", "mass", "scale"]


@pytest.mark.parametrize("text, expected", [
    ("B:\n  measure: progress\n  thresholds: [0.1]\n  min_lesson_length: 10\n  parameters: {h: [1, 2]}\n",
     "behavior 'B': missing required key(s) signal_smoothing"),
    ("B:\n  measure: progress\n  thresholds: [0.1]\n  min_lesson_lenght: 10\n  signal_smoothing: true\n"
     "  parameters: {h: [1, 2]}\n", "unknown key(s) 'min_lesson_lenght' (did you mean 'min_lesson_length'?)"),
    ("B:\n  measure: steps\n  thresholds: [0.1]\n  min_lesson_length: 10\n  signal_smoothing: true\n"
     "  parameters: {h: [1, 2]}\n", "behavior 'B': measure: expected 'progress' or 'reward', got 'steps'"),
    ("B:\n  measure: reward\n  thresholds: [0.1, 0.2]\n  min_lesson_length: 10\n  signal_smoothing: true\n"
     "  parameters: {h: [1, 2]}\n", "parameters: h: expected a list of 3 values (len(thresholds) + 1"),
    ("B:\n  measure: reward\n  thresholds: [0.1]\n  min_lesson_length: 0\n  signal_smoothing: true\n"
     "  parameters: {h: [1, 2]}\n", "min_lesson_length: expected an integer"),
    ("B:\n  measure: reward\n  thresholds: [a]\n  min_lesson_length: 5\n  signal_smoothing: true\n"
     "  parameters: {h: [1, 2]}\n", "thresholds[0]: expected a number"),
    ("B:\n  measure: reward\n  thresholds: [1]\n  min_lesson_length: 5\n  signal_smoothing: maybe\n"
     "  parameters: {h: [1, 2]}\n", "signal_smoothing: expected"),
    ("B:\n  measure: progress\n  thresholds: [0.5, 1.5]\n  min_lesson_length: 5\n  signal_smoothing: true\n"
     "  parameters: {h: [1, 2, 3]}\n", "thresholds[1]: with measure: progress a threshold is a fraction of max_steps, "
                                        "below 1 (past 1 training has ended: the lesson would never be trained in), "
                                        "got 1.5"),
    ("B:\n  measure: reward\n  thresholds: [1]\n  min_lesson_length: 5\n  signal_smoothing: true\n"
     "  parameters: {h: [1, 1.0e39]}\n", "parameters: h[1]: expected a number a 32-bit float holds"),
    ("B: 3\n", "behavior 'B': expected a mapping"),
    ("", "the curriculum file is empty"),
])
def test_bad_curricula_name_file_behavior_and_key(tmp_path, text, expected):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_curricula(path)
    assert str(path) in str(e.value) and expected in str(e.value)


@pytest.mark.parametrize("measure, warned", [("progress", True), ("reward", False)])
def test_progress_thresholds_that_do_not_rise_are_warned_about(tmp_path, caplog, measure, warned):
    # (a harder lesson may earn less, so falling reward thresholds can be meant)
    path = tmp_path / "c.yaml"
    path.write_text(f"B:\n  measure: {measure}\n  thresholds: [0.3, 0.1, 0.1]\n  min_lesson_length: 5\n"
                    "  signal_smoothing: false\n  parameters: {h: [1, 2, 3, 4]}\n")
    with caplog.at_level(logging.WARNING, logger="palaestra"):
        load_curricula(path)
    expected = ("thresholds[1] is 0.1, not above thresholds[0] (0.3): with measure: progress lesson 1 lasts only "
                "min_lesson_length episodes, whatever the progress")
    assert (expected in caplog.text) is warned
    assert ("thresholds[2] is 0.1, not above thresholds[1] (0.1)" in caplog.text) is warned


@pytest.mark.parametrize("text, expected", [
    ("mass: {sampler-type: uniform, min_value: 1, max_value: 2}\n", "'resampling-interval' is required"),
    ("resampling-interval: 0\nmass: {sampler-type: uniform, min_value: 1, max_value: 2}\n",
     "resampling-interval: expected an integer"),
    ("resampling-interval: 1.5\nmass: {sampler-type: uniform, min_value: 1, max_value: 2}\n",
     "resampling-interval: expected an integer"),
    ("resampling-interval: 10\nmass: {sampler-type: uniform, min-value: 10}\n",
     "parameter 'mass': unknown key(s) min-value (did you mean 'min_value'?); missing key(s) min_value, max_value"),
    ("resampling_interval: 10\nmass: {sampler-type: uniform, min_value: 1, max_value: 2}\n",
     "'resampling-interval' is required: the global steps between two draws (every environment resets with fresh "
     "values then) (found 'resampling_interval': write it 'resampling-interval')"),
    ("resampling-interval: 10\nmass: {sampler_type: uniform, min_value: 1, max_value: 2}\n",
     "'sampler-type' is missing; one of uniform, gaussian, multirange_uniform (found 'sampler_type': write it "
     "'sampler-type')"),
    ("resampling-interval: 10\nmass: {min-value: 2, max-value: 30}\n", "parameter 'mass': 'sampler-type' is missing"),
    ("resampling-interval: 10\nmass: {sampler-type: beta, a: 1}\n", "sampler-type: unknown type 'beta'"),
    ("resampling-interval: 10\nmass: {sampler-type: [uniform], min_value: 1}\n", "sampler-type: unknown type ['uniform']"),
    ("resampling-interval: 10\nmass: {sampler-type: {a: 1}}\n", "sampler-type: unknown type {'a': 1}"),
    ("resampling-interval: 10\nmass: {sampler-type: uniform, min_value: 3, max_value: 2}\n",
     "min_value must not be larger than max_value"),
    ("resampling-interval: 10\nmass: {sampler-type: gaussian, mean: 3, st_dev: -1}\n", "st_dev must not be negative"),
    ("resampling-interval: 10\nmass: {sampler-type: uniform, min_value: -1.0e308, max_value: 1.0e308}\n",
     "min_value: expected a number a 32-bit float holds"),
    ("resampling-interval: 10\nmass: {sampler-type: multirange_uniform, intervals: [[-1.0e308, 0], [0, 1.0e308]]}\n",
     "intervals: expected a number a 32-bit float holds"),
    ("resampling-interval: 10\nmass: {sampler-type: gaussian, mean: 1.0e39, st_dev: 1}\n",
     "mean: expected a number a 32-bit float holds (at most about 3.4e38 in size)"),
    ("resampling-interval: 10\nmass: {sampler-type: multirange_uniform, intervals: [[1, 2], [3]]}\n",
     "intervals: expected a list of [min, max] pairs"),
    ("resampling-interval: 10\n", "no parameter to sample"),
])
def test_bad_samplers_name_file_parameter_and_key(tmp_path, text, expected):
    path = tmp_path / "sampler.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_sampler(path)
    assert str(path) in str(e.value) and expected in str(e.value)


# -- the lesson state machine ------------------------------------------------------------------
def test_reward_measure_waits_for_min_lesson_length_and_is_strictly_greater():
    c, s = curriculum("reward", thresholds=(1.0, 2.0), min_length=3), LessonState()
    s.add_returns(c, [5.0, 5.0])
    assert not s.check(c, 0.0) and s.measure is None  # 2 episodes < min_lesson_length 3: no check
    s.add_returns(c, [-7.0])  # mean of the last 3: exactly 1.0, not above the threshold
    assert not s.check(c, 0.0) and s.measure == pytest.approx(1.0) and s.lesson == 0
    s.add_returns(c, [2.0])  # the buffer keeps the last 3: 5, -7, 2 → 0
    assert not s.check(c, 0.0)
    s.add_returns(c, [9.0, 9.0])  # -7 left: mean of 2, 9, 9
    assert s.check(c, 0.0) and s.lesson == 1 and len(s.returns) == 0  # a new lesson starts counting again


def test_one_lesson_per_check_and_capped():
    c, s = curriculum("progress", thresholds=(0.1, 0.2, 0.3), min_length=1), LessonState()
    s.add_returns(c, [0.0])
    assert s.check(c, 0.9) and s.lesson == 1  # far past every threshold: still one lesson
    s.add_returns(c, [0.0])
    assert s.check(c, 0.9) and s.lesson == 2
    s.add_returns(c, [0.0])
    assert s.check(c, 0.9) and s.lesson == 3
    s.add_returns(c, [0.0])
    assert not s.check(c, 0.9) and s.lesson == 3  # the last lesson


def test_smoothing_blends_quarter_previous_three_quarters_new():
    c, s = curriculum("progress", thresholds=(0.5,), min_length=1, smoothing=True), LessonState()
    s.add_returns(c, [0.0])
    assert not s.check(c, 0.6)  # 0.25 x 0 + 0.75 x 0.6 = 0.45
    assert s.measure == pytest.approx(0.45)
    s.add_returns(c, [0.0])
    assert s.check(c, 0.6)  # 0.25 x 0.45 + 0.45 = 0.5625
    assert s.smoothed == pytest.approx(0.5625)


def test_lesson_state_round_trips():
    c, s = curriculum("reward", thresholds=(1.0, 2.0), min_length=3, smoothing=True), LessonState(lesson=1)
    s.add_returns(c, [1.0, 2.0])
    restored = LessonState()
    restored.load_state_dict(s.state_dict(), c)
    assert (restored.lesson, list(restored.returns), restored.returns.maxlen) == (1, [1.0, 2.0], 3)


def test_a_checkpoint_past_the_curriculum_s_last_lesson_goes_on_at_it_and_says_so(caplog):
    shorter = curriculum("reward", thresholds=(1.0,), min_length=3)
    restored = LessonState()
    restored.load_state_dict({"lesson": 2}, shorter)
    assert restored.lesson == 1
    assert "the checkpoint is at lesson 2, and the curriculum now has lessons 0 to 1; it goes on at its last" in caplog.text


# -- samplers and the run's parameters ---------------------------------------------------------
def test_samplers_same_seed_same_draws_and_different_per_worker(tmp_path):
    sampler = load_sampler(write_yaml(tmp_path / "s.yaml", """
        resampling-interval: 100
        mass: {sampler-type: uniform, min_value: 0.5, max_value: 10}
        gravity: {sampler-type: gaussian, mean: 9.81, st_dev: 1}
        scale: {sampler-type: multirange_uniform, intervals: [[0.5, 1.0], [2.0, 4.0]]}
        """))
    a = EnvironmentParameters({}, sampler, seed=7, workers=3)
    b = EnvironmentParameters({}, sampler, seed=7, workers=3)
    first = a.draw()
    assert first == b.draw() and a.draw() == b.draw()
    assert len({v["mass"] for v in first}) == 3  # each worker its own draw
    assert first != EnvironmentParameters({}, sampler, seed=8, workers=3).draw()
    draws = np.array([a.draw()[0]["scale"] for _ in range(400)])
    assert ((draws >= 0.5) & (draws < 1.0) | (draws >= 2.0) & (draws < 4.0)).all()
    assert 0.1 < np.mean(draws < 1.0) < 0.35  # the intervals are chosen in proportion to their length (1/5)
    assert a.resample_due(99, 100) and not a.resample_due(100, 199) and a.resample_due(150, 420)


class _Counting:
    """A sampler with state of its own: 1, 2, 3, ... whatever the generator."""

    def __init__(self) -> None:
        self.n = 0

    def sample(self, rng) -> float:
        self.n += 1
        return float(self.n)


class _Failing:
    def sample(self, rng) -> float:
        raise ValueError("no values today")


def test_the_values_drawn_ahead_for_a_unity_scene_are_the_first_draws(tmp_path):
    from palaestra.curriculum.samplers import SamplerConfig
    from palaestra.settings import ConfigError

    # a Unity scene gets its first values as it starts (draw_ahead); the run's first reset sends
    # the same (draw), then the draws go on, a sampler with a state of its own included
    counting = SamplerConfig(100, {"k": _Counting()}, "s.yaml")
    p = EnvironmentParameters({}, counting, seed=0, workers=2)
    assert p.draw_ahead() == p.draw() == [{"k": 1.0}, {"k": 2.0}]
    assert p.draw() == [{"k": 3.0}, {"k": 4.0}]
    # after --resume the resumed draws, not those kept from the start
    p = EnvironmentParameters({}, load_sampler(write_yaml(tmp_path / "s.yaml", """
        resampling-interval: 100
        mass: {sampler-type: uniform, min_value: 0.5, max_value: 10}
        """)), seed=0, workers=1)
    ahead = p.draw_ahead()
    p.resume_at(5000)
    assert p.draw() != ahead
    with pytest.raises(ConfigError, match="s.yaml: drawing the environment parameters failed: ValueError: no values"):
        EnvironmentParameters({}, SamplerConfig(100, {"k": _Failing()}, "s.yaml"), seed=0, workers=1).draw_ahead()


def test_curriculum_values_override_sampled_ones_and_lesson_start(tmp_path, caplog):
    sampler = load_sampler(write_yaml(tmp_path / "s.yaml", """
        resampling-interval: 100
        h: {sampler-type: uniform, min_value: 100, max_value: 200}
        mass: {sampler-type: uniform, min_value: 1, max_value: 2}
        """))
    c = Curriculum("B", "reward", (1.0,), 1, False, {"h": (1.0, 2.0)}, "c")
    other = Curriculum("C", "reward", (1.0,), 1, False, {"h": (5.0, 6.0)}, "c")
    with caplog.at_level(logging.WARNING, "palaestra"):
        p = EnvironmentParameters({"B": c, "C": other}, sampler, seed=0, workers=1, lesson=5)
    assert "parameter 'h' is set by the curricula of B, C" in caplog.text
    assert f"parameter 'h' is sampled ({tmp_path / 's.yaml'}) and set by the curriculum of B, C" in caplog.text
    assert "'mass' is sampled" not in caplog.text
    assert "--lesson 5: the curriculum of B has lessons 0 to 1; it starts at its last, 1" in caplog.text
    values = p.draw()[0]
    assert values["h"] == 6.0 and 1 <= values["mass"] < 2  # --lesson 5 clamped to the last lesson (1)


class _Trainer:
    def __init__(self):
        self.returns, self.progress = [], 0.0

    def take_finished_returns(self):
        taken, self.returns = self.returns, []
        return taken


def test_check_lessons_feeds_returns_and_reports_changes(caplog):
    c = Curriculum("B", "reward", (1.0, 2.0), 2, False, {"h": (1.0, 2.0, 3.0)}, "c")
    p, t = EnvironmentParameters({"B": c}, None, seed=0, workers=1), _Trainer()
    assert p.draw() == [{"h": 1.0}]
    t.returns = [3.0]
    assert p.check_lessons({"B": t}) == []
    t.returns = [3.0]
    with caplog.at_level(logging.INFO, "palaestra"):
        assert p.check_lessons({"B": t}) == ["B"]
    assert "B: lesson 1 of 2 (reward 3 > 1)" in caplog.text
    assert p.draw() == [{"h": 2.0}]
    # the new lesson's measure shows from its first check on, not the last lesson's before it
    assert p.summary("B") == {"Environment/Lesson": 1.0, "Curriculum/Threshold": 2.0, "Environment Parameters/h": 2.0}
    t.returns = [1.0, 4.0]
    assert p.check_lessons({"B": t}) == ["B"]  # mean 2.5 > 2
    # the last lesson is never checked: once its episodes come, the measure that advanced to it stays absent
    t.returns = [5.0, 5.0]
    assert p.check_lessons({"B": t}) == []
    assert p.summary("B") == {"Environment/Lesson": 2.0, "Environment Parameters/h": 2.0}



def test_a_progress_lesson_is_checked_after_every_step_not_only_when_episodes_end():
    # ML-Agents checks after every environment step (reference §5): a progress threshold crossed
    # in the middle of long episodes advances there, and the smoothing blends one value per check
    c = Curriculum("B", "progress", (0.5,), 1, True, {"h": (1.0, 2.0)}, "c")
    p, t = EnvironmentParameters({"B": c}, None, seed=0, workers=1), _Trainer()
    p.draw()
    t.returns, t.progress = [0.0], 0.1  # one episode ended: the count is met from now on
    assert p.check_lessons({"B": t}) == []
    t.progress = 0.6  # no episode ends from here on
    changes = [p.check_lessons({"B": t}) for _ in range(3)]
    assert changes == [[], ["B"], []]  # smoothed: 0.075, then 0.469, 0.567; the last lesson
    assert p.summary("B") == {"Environment/Lesson": 1.0, "Environment Parameters/h": 1.0}  # no stale measure


SAMPLER_FILE = "resampling-interval: 5000\nmass:\n  sampler-type: uniform\n  min_value: 0.5\n  max_value: 10\n"
TRAINER_FILE = "default:\n  trainer: ppo\n  batch_size: 64\n"


@pytest.mark.parametrize("load, text, message", [
    (load_curricula, SAMPLER_FILE, "this is a parameter-sampler file (resampling-interval, sampler-type): give it "
                                   "with --sampler; --curriculum takes a curriculum file"),
    (load_curricula, TRAINER_FILE, "this is a trainer config ('default:' and behavior sections of trainer settings): "
                                   "give it as the first argument; --curriculum takes"),
    (load_sampler, TRAINER_FILE, "this is a trainer config ('default:' and behavior sections of trainer settings): "
                                 "give it as the first argument; --sampler takes a parameter-sampler file"),
    (load_sampler, WALL, "this is a curriculum file (a section per behavior with measure, thresholds, parameters): "
                         "give it with --curriculum; --sampler takes"),
    (load_sampler, "# nothing\n", "the sampler file is empty; it needs 'resampling-interval'"),
])
def test_a_file_of_another_kind_is_named_for_what_it_is(tmp_path, load, text, message):
    path = write_yaml(tmp_path / "f.yaml", text)
    with pytest.raises(ConfigError) as error:
        load(path)
    assert str(error.value).startswith(f"{path}: ") and message in str(error.value)


# -- sampler types added from Python -----------------------------------------------------------
class _Constant:  # not a dataclass: its keys are given at registration
    def __init__(self, value: float) -> None:
        self.value = value

    def sample(self, rng: np.random.Generator) -> float:
        return self.value


class _MLAgentsStyle:  # ML-Agents' interface: no generator passed in
    def sample_parameter(self) -> float:
        return 1.0


def test_a_registered_sampler_type_loads_draws_and_is_described(tmp_path):
    from palaestra.curriculum.samplers import SAMPLER_TYPES, register_sampler
    from palaestra.settings import real
    register_sampler("constant", _Constant, {"value": real()})
    try:
        path = tmp_path / "s.yaml"
        path.write_text("resampling-interval: 10\nmass: {sampler-type: constant, value: 2.5}\n")
        p = EnvironmentParameters({}, load_sampler(path), seed=0, workers=2)
        assert p.draw() == [{"mass": 2.5}, {"mass": 2.5}]
        assert p.describe()["sampler"]["parameters"] == {"mass": {"sampler-type": "constant", "value": 2.5}}
    finally:
        del SAMPLER_TYPES["constant"]


@pytest.mark.parametrize("cls, keys, message", [
    (_Constant, None, "_Constant is not a dataclass, so its keys cannot be read from its fields: pass keys="),
    (_MLAgentsStyle, None, "_MLAgentsStyle needs a method sample(self, rng) returning a float, rng a "
                           "numpy.random.Generator (ML-Agents' samplers define sample_parameter()"),
    (lambda rng: 1.0, None, "needs a method sample(self, rng)"),
])
def test_a_sampler_type_that_cannot_work_is_refused_when_registered(cls, keys, message):
    from palaestra.curriculum.samplers import SAMPLER_TYPES, register_sampler
    with pytest.raises(TypeError, match=re.escape(message)):
        register_sampler("broken", cls, keys)
    assert "broken" not in SAMPLER_TYPES


def test_a_resume_whose_curriculum_measures_otherwise_starts_smoothing_again():
    # the smoothed reward (1.3) was blended into the first progress check, and the lesson advanced at once
    by_reward = curriculum("reward", thresholds=(1000.0,), min_length=1, smoothing=True)
    s = LessonState()
    s.add_returns(by_reward, [1.3])
    s.check(by_reward, 0.0)
    assert s.smoothed == pytest.approx(0.975)
    by_progress = curriculum("progress", thresholds=(0.2,), min_length=1, smoothing=True)
    restored = LessonState()
    restored.load_state_dict(s.state_dict(by_reward), by_progress)
    assert restored.smoothed == 0.0 and restored.measure is None
    restored.add_returns(by_progress, [1.3])
    assert not restored.check(by_progress, 0.05)
    same = LessonState()
    same.load_state_dict(s.state_dict(by_reward), by_reward)  # the same measure: its smoothing goes on
    assert same.smoothed == pytest.approx(0.975)
    older = LessonState()
    older.load_state_dict(s.state_dict(), by_progress)  # a checkpoint from before the measure was saved
    assert older.smoothed == pytest.approx(0.975)


def test_a_curriculum_keyed_for_a_team_keeps_its_place_in_the_file(caplog):
    # of two curricula setting one parameter the later one in the file wins; re-keyed to a team
    # (Tennis -> Tennis?team=0), the earlier one moved to the end and won
    tennis = dataclasses.replace(curriculum("progress", thresholds=(0.5,), min_length=1), behavior="Tennis")
    other = dataclasses.replace(curriculum("progress", thresholds=(0.5,), min_length=1), behavior="Other")
    tennis = dataclasses.replace(tennis, parameters={"x": [1.0, 1.5]})
    other = dataclasses.replace(other, parameters={"x": [2.0, 2.5]})
    parameters = EnvironmentParameters({"Tennis": tennis, "Other": other}, None, seed=0, workers=1)
    assert "the value sent is Other's" in caplog.text and parameters.draw()[0]["x"] == 2.0
    assert parameters.claim("Tennis?team=0")
    assert list(parameters.curricula) == ["Tennis?team=0", "Other"] and parameters.draw()[0]["x"] == 2.0


@pytest.mark.parametrize("key, refused", [("Tennis?team=1", True), ("Tennis", False)])
def test_a_curriculum_of_a_self_play_team_that_does_not_save_the_policy_is_refused(run_cli, workdir, key, refused):
    # its lesson was never saved nor summarized: only the owner team saves and summarizes the policy
    from tests.conftest import SHIPPED_CONFIG

    lessons = write_yaml(workdir / "lessons.yaml", f"""
        "{key}":
          measure: progress
          thresholds: [0.5]
          min_lesson_length: 1
          signal_smoothing: false
          parameters:
            racket_speed: [1.0, 2.0]
        """)
    result = run_cli(str(SHIPPED_CONFIG), "--env=Tennis", "--run-id=t", f"--curriculum={lessons}", "--dry-run")
    message = (f"{lessons}: the curriculum of 'Tennis?team=1': its self-play teams share one policy, which "
               "'Tennis?team=0' trains, saves and summarizes; key the curriculum 'Tennis' (or 'Tennis?team=0') instead")
    assert (result.code, message in result.log) == ((1, True) if refused else (0, False)), result.log
