"""The fake Unity player: ``python -m tests.fake_unity.player [fake options] --mlagents-port N
[-batchmode -nographics] [-logFile path] [extra args]``.

It connects to the trainer as Unity's Academy does and plays a scene (scene.py). Fake options,
given by the build script or through ``--env-args``:
  --scene NAME         a built-in environment's physics (3DBall, GridWorld, ...) or 'Staggered'
  --behavior NAME      the behavior name to announce (default: the built-in's)
  --camera SIZE        add a SIZE x SIZE camera observation first; --gray for one channel;
                       --float-camera to send it as floats instead of PNG; --channels-first for [C, H, W]
  --api VERSION        the communicator API to announce (default 1.5.0); --package VERSION
  --slow-start S       wait S seconds before connecting; --step-delay S: before each answer
  --crash-after N      exit with code 3 after N steps; --hang-after N: stop answering after N steps
  --exit-at-once       exit with code 1 before connecting
  --quit-after N       after N steps, say goodbye (status 400) and exit, as the Editor does when
                       Play is stopped
  --stats              send statistics on the stats channel every step
  --nan-after N        send a NaN observation after N steps
  --echo CHANNEL_ID    answer every raw-bytes message on that channel with the bytes reversed
  --striker-from N     Staggered: the Striker behavior's agents appear at step N
It writes one JSON line per event to its log (-logFile): its arguments, the trainer's
initialization, every side-channel message it received, the steps and resets it did.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import uuid


from palaestra.envs.unity import messages as pb
from palaestra.envs.unity import side_channels as sc
from tests.fake_unity.scene import BuiltinScene, StaggeredScene


def parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    p = argparse.ArgumentParser(prog="fake-unity", allow_abbrev=False)
    p.add_argument("--mlagents-port", type=int, default=5004)  # Unity's default: the Editor's port
    p.add_argument("-logFile", default=None)
    p.add_argument("-batchmode", action="store_true")
    p.add_argument("-nographics", action="store_true")
    p.add_argument("--scene", default="3DBall")
    p.add_argument("--behavior", default=None)
    p.add_argument("--camera", type=int, default=0)
    p.add_argument("--gray", action="store_true")
    p.add_argument("--float-camera", action="store_true")
    p.add_argument("--channels-first", action="store_true")
    p.add_argument("--api", default="1.5.0")
    p.add_argument("--package", default="2.0.1")
    p.add_argument("--slow-start", type=float, default=0.0)
    p.add_argument("--step-delay", type=float, default=0.0)
    p.add_argument("--crash-after", type=int, default=-1)
    p.add_argument("--hang-after", type=int, default=-1)
    p.add_argument("--exit-at-once", action="store_true")
    p.add_argument("--quit-after", type=int, default=-1)
    p.add_argument("--stats", action="store_true")
    p.add_argument("--nan-after", type=int, default=-1)
    p.add_argument("--echo", default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--striker-from", type=int, default=0)
    return p.parse_known_args(argv)


class Log:
    def __init__(self, path: str | None) -> None:
        if path:  # as Unity, make the log's folder
            os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
        self.file = open(path, "a", buffering=1) if path else sys.stderr

    def __call__(self, **event: object) -> None:
        self.file.write(json.dumps(event) + "\n")


def version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(x) for x in text.split("."))


def side_channel_events(data: bytes, log: Log, echo: uuid.UUID | None) -> list[tuple[uuid.UUID, bytes]]:
    """Log what the trainer sent on each channel; the answers to send back."""
    answers = []
    for channel_id, payload in sc.decode(data):
        r = sc.Reader(payload, str(channel_id))
        if channel_id == sc.ENGINE_CONFIGURATION_ID:
            kind = r.int32()
            values = [r.int32(), r.int32()] if kind == 0 else [r.float32() if kind == 2 else r.int32()]
            log(event="engine", kind=kind, values=values)
        elif channel_id == sc.ENVIRONMENT_PARAMETERS_ID:
            key, kind = r.string(), r.int32()
            log(event="parameter", key=key, kind=kind, value=r.float32())
        elif channel_id == sc.FLOAT_PROPERTIES_ID:
            key, value = r.string(), r.float32()
            log(event="float_property", key=key, value=value)
            # a scene's own property set in answer, as C# code may set one (the channel goes both ways)
            answers.append((channel_id, bytes(sc.Writer().string(f"{key}/seen").float32(2.0 * value).data)))
        elif echo is not None and channel_id == echo:
            log(event="raw", data=payload.hex())
            answers.append((channel_id, payload[::-1]))
        else:
            log(event="unknown_channel", channel=str(channel_id), size=len(payload))
    return answers


def stats_records(step: int) -> list[tuple[uuid.UUID, bytes]]:
    average = sc.Writer().string("Fake/Step").float32(float(step)).int32(sc.STAT_AVERAGE).data
    recent = sc.Writer().string("Fake/Latest").float32(float(step)).int32(sc.STAT_MOST_RECENT).data
    return [(sc.STATS_ID, bytes(average)), (sc.STATS_ID, bytes(recent))]


def main(argv: list[str]) -> int:
    args, extra = parse(argv)
    log = Log(args.logFile)
    log(event="start", argv=argv, extra=extra, batchmode=args.batchmode, nographics=args.nographics,
        port=args.mlagents_port, pid=os.getpid())
    if args.exit_at_once:
        log(event="exit", reason="--exit-at-once")
        return 1
    time.sleep(args.slow_start)
    import grpc

    api = version_tuple(args.api) if args.api.replace(".", "").isdigit() else (0, 0, 0)
    hybrid = api >= (1, 3, 0)
    if args.scene == "Staggered":
        scene = StaggeredScene(hybrid, args.striker_from)
    else:
        scene = BuiltinScene(args.scene, args.seed, args.camera, 1 if args.gray else 3, not args.float_camera,
                             args.channels_first and api >= (1, 5, 0), hybrid, args.behavior)
    channel = grpc.insecure_channel(f"localhost:{args.mlagents_port}")
    exchange = channel.unary_unary(pb.EXCHANGE, request_serializer=pb.UnityMessageProto.SerializeToString,
                                   response_deserializer=pb.UnityMessageProto.FromString)
    try:
        grpc.channel_ready_future(channel).result(timeout=30)
    except grpc.FutureTimeoutError:
        log(event="exit", reason="no trainer listening")
        return 1

    first = pb.UnityMessageProto()
    first.header.status = 200
    init = first.unity_output.rl_initialization_output
    init.name, init.communication_version, init.package_version = "FakeAcademy", args.api, args.package
    init.log_path = args.logFile or ""
    init.capabilities.baseRLCapabilities = True
    init.capabilities.concatenatedPngObservations = api >= (1, 1, 0)
    init.capabilities.compressedChannelMapping = api >= (1, 2, 0)
    init.capabilities.hybridActions = hybrid
    init.capabilities.trainingAnalytics = api >= (1, 4, 0)
    init.capabilities.variableLengthObservation = api >= (1, 5, 0)
    init.capabilities.multiAgentGroups = api >= (1, 5, 0)
    echo = uuid.UUID(args.echo) if args.echo else None
    try:
        reply = exchange(first)
        if reply.header.status != 200:
            log(event="exit", reason=f"trainer answered the handshake with status {reply.header.status}")
            return 0
        trainer = reply.unity_input.rl_initialization_input
        log(event="initialized", version=trainer.communication_version, package=trainer.package_version,
            seed=trainer.seed, hybrid=trainer.capabilities.hybridActions)
        if version_tuple(trainer.communication_version)[0] != api[0]:  # Unity's own check: majors must match
            log(event="exit", reason="incompatible trainer")
            return 1
        second = pb.UnityMessageProto()
        second.header.status = 200
        reply = exchange(second)
        announced: set[str] = set()
        steps = 0
        while True:
            if reply.header.status != 200:
                log(event="exit", reason=f"status {reply.header.status}", steps=steps)
                return 0
            rl_input = reply.unity_input.rl_input
            answers = side_channel_events(rl_input.side_channel, log, echo)
            if rl_input.command == pb.QUIT:
                goodbye = pb.UnityMessageProto()
                goodbye.header.status = 400
                exchange(goodbye)
                log(event="exit", reason="QUIT", steps=steps)
                return 0
            if rl_input.command == pb.RESET or steps == 0 and not announced:
                scene.reset()
                log(event="reset", steps=steps)
            else:
                scene.act({b: list(v.value) for b, v in rl_input.agent_actions.items()})
                for violation in getattr(scene, "violations", []):
                    log(event="masked_action", what=violation)
                scene.violations = []
                for unanswered in getattr(scene, "unanswered", []):
                    log(event="unanswered", what=unanswered)
                scene.unanswered = []
                scene.step()
                steps += 1
                if steps == args.crash_after:
                    log(event="exit", reason="--crash-after")
                    os._exit(3)
                if steps == args.quit_after:
                    goodbye = pb.UnityMessageProto()
                    goodbye.header.status = 400
                    goodbye.header.message = "Play was stopped"
                    try:
                        exchange(goodbye, timeout=2)
                    except grpc.RpcError:
                        pass
                    log(event="exit", reason="--quit-after", steps=steps)
                    return 0
                if steps == args.hang_after:
                    log(event="hang")
                    while True:
                        time.sleep(60)
            out = pb.UnityMessageProto()
            out.header.status = 200
            rl_output = out.unity_output.rl_output
            for behavior, infos in scene.infos().items():
                rl_output.agentInfos[behavior].value.extend(infos)
            if args.nan_after >= 0 and steps >= args.nan_after:
                for infos in rl_output.agentInfos.values():
                    if infos.value:
                        infos.value[0].observations[-1].float_data.data[0] = float("nan")
            for b in scene.brains():  # a behavior's parameters come with its first agents
                if b.brain_name not in announced and rl_output.agentInfos[b.brain_name].value:
                    out.unity_output.rl_initialization_output.brain_parameters.append(b)
                    announced.add(b.brain_name)
            records = answers + (stats_records(steps) if args.stats else [])
            rl_output.side_channel = sc.encode(records)
            time.sleep(args.step_delay)
            reply = exchange(out)
    except grpc.RpcError as e:  # the trainer went away: a Unity build quits
        log(event="exit", reason=f"connection lost: {e.code()}")
        return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
