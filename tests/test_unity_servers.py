"""The two gRPC servers Unity calls (envs/unity/servers.py), driven by a plain gRPC client in
Unity's place: the same exchange on both, and what the direct server does with calls that are
not ML-Agents' Exchange."""

from __future__ import annotations

import random
import socket
import time

import grpc
import pytest

from palaestra.envs.base import EnvError
from palaestra.envs.unity import messages as pb
from palaestra.envs.unity.communicator import Communicator, free_port
from palaestra.envs.unity.servers import EXCHANGE, DirectServer, ThreadedServer, make_server

SERVERS = {"direct": DirectServer, "threaded": ThreadedServer}


@pytest.fixture
def port() -> int:
    return free_port(random.randrange(20000, 40000, 10))


@pytest.fixture
def channel(port):
    with grpc.insecure_channel(f"localhost:{port}") as channel:
        yield channel


def exchange_stub(channel):
    return channel.unary_unary(EXCHANGE, request_serializer=pb.UnityMessageProto.SerializeToString,
                               response_deserializer=pb.UnityMessageProto.FromString)


def unity_output(name: str) -> object:
    message = pb.UnityMessageProto()
    message.header.status = 200
    message.unity_output.rl_initialization_output.name = name
    return message


def answer(seed: int) -> object:
    message = pb.UnityMessageProto()
    message.header.status = 200
    message.unity_input.rl_initialization_input.seed = seed
    return message


def take(server, timeout: float = 10.0) -> object:
    message = server.next_message(timeout)
    assert message is not None, "no message within the time-out"
    return message


@pytest.mark.parametrize("kind", SERVERS)
def test_each_server_hands_unity_s_messages_over_and_its_answers_back(kind, port, channel):
    server = SERVERS[kind](port)
    try:
        stub = exchange_stub(channel)
        for step in range(3):  # one call at a time, as Unity makes them
            call = stub.future(unity_output(f"scene {step}"), timeout=10)
            assert take(server).unity_output.rl_initialization_output.name == f"scene {step}"
            server.reply(answer(step))
            assert call.result().unity_input.rl_initialization_input.seed == step
        assert server.delivered(1.0)
        started = time.monotonic()
        assert server.next_message(0.2) is None  # nothing more came: the time-out, not a hang
        assert 0.15 < time.monotonic() - started < 5
    finally:
        server.stop(0.5)


@pytest.mark.parametrize("kind", SERVERS)
def test_an_answer_to_a_call_unity_gave_up_is_harmless_and_its_next_call_is_served(kind, port, channel):
    server = SERVERS[kind](port)
    try:
        stub = exchange_stub(channel)
        abandoned = stub.future(unity_output("first"), timeout=10)
        take(server)
        abandoned.cancel()  # as when Unity's call times out, or the player dies mid-call
        time.sleep(0.2)
        server.reply(answer(1))
        assert server.delivered(1.0)
        call = stub.future(unity_output("second"), timeout=10)
        assert take(server).unity_output.rl_initialization_output.name == "second"
        server.reply(answer(2))
        assert call.result().unity_input.rl_initialization_input.seed == 2
    finally:
        server.stop(0.5)


@pytest.mark.parametrize("kind", SERVERS)
def test_each_server_refuses_a_port_another_process_holds(kind, port):
    with socket.socket() as holder:
        holder.bind(("0.0.0.0", port))
        holder.listen()
        with pytest.raises(EnvError, match=f"cannot listen on port {port}: another process holds it"):
            SERVERS[kind](port)


@pytest.mark.parametrize("kind", SERVERS)
def test_closing_answers_unity_s_waiting_call_with_the_goodbye(kind, port, channel):
    communicator = Communicator(port, SERVERS[kind](port))
    call = exchange_stub(channel).future(unity_output("scene"), timeout=10)
    communicator.receive(10, "the scene", "")
    assert communicator.close(grace=2.0)  # delivered: Unity took the answer
    reply = call.result()
    assert reply.header.status == 400 and reply.header.message == "training is over"
    assert not communicator.close()  # once only


@pytest.mark.parametrize("kind", SERVERS)
def test_unity_s_goodbye_ends_the_exchange_and_its_call_is_closed_at_once(kind, port, channel):
    from palaestra.envs.unity.communicator import UnityStopped

    communicator = Communicator(port, SERVERS[kind](port))
    goodbye = pb.UnityMessageProto()
    goodbye.header.status = 400
    goodbye.header.message = "Play was stopped"
    call = exchange_stub(channel).future(goodbye, timeout=10)
    with pytest.raises(UnityStopped, match="status 400: Play was stopped"):
        communicator.receive(10, "the observations", "")
    started = time.monotonic()
    assert communicator.close(grace=3.0)  # Unity is quitting
    assert call.result().header.status == 400 and time.monotonic() - started < 2.0


def test_the_direct_server_refuses_other_methods_and_keeps_serving(port, channel):
    server = DirectServer(port)
    try:
        other = channel.unary_unary("/some.Service/Probe")
        with pytest.raises(grpc.RpcError) as refused:
            probe = other.future(b"", timeout=10)
            server.next_message(0.5)  # serves the probe while it waits for Unity
            probe.result()
        assert refused.value.code() == grpc.StatusCode.UNIMPLEMENTED
        call = exchange_stub(channel).future(unity_output("after the probe"), timeout=10)
        assert take(server).unity_output.rl_initialization_output.name == "after the probe"
        server.reply(answer(7))
        assert call.result().unity_input.rl_initialization_input.seed == 7
    finally:
        server.stop(0.5)


def test_the_direct_server_names_a_message_that_is_not_ml_agents_protocol(port, channel):
    server = DirectServer(port)
    try:
        raw = channel.unary_unary(EXCHANGE)  # bytes as they are
        call = raw.future(b"\xff\xff\xff", timeout=10)
        with pytest.raises(EnvError, match="could not be read as ML-Agents' protocol"):
            server.next_message(10)
        with pytest.raises(grpc.RpcError) as failed:
            call.result()
        assert failed.value.code() == grpc.StatusCode.INTERNAL
    finally:
        server.stop(0.5)


def test_the_threaded_server_serves_where_grpcio_s_core_is_not_the_known_one(port, monkeypatch):
    def other_core(port):
        raise AttributeError("module 'grpc._cython.cygrpc' has no attribute 'Server'")

    monkeypatch.setattr("palaestra.envs.unity.servers.DirectServer", other_core)
    server = make_server(port)
    try:
        assert isinstance(server, ThreadedServer)
    finally:
        server.stop(0.5)


def test_the_environment_variable_chooses_the_threaded_server(port, monkeypatch):
    monkeypatch.setenv("PALAESTRA_GRPC_SERVER", "threaded")
    server = make_server(port)
    server.stop(0.5)
    assert isinstance(server, ThreadedServer)
    monkeypatch.delenv("PALAESTRA_GRPC_SERVER")
    server = make_server(free_port(port + 1))
    server.stop(0.5)
    assert isinstance(server, DirectServer)


def test_a_misspelled_server_choice_is_named(port, monkeypatch, caplog):
    monkeypatch.setenv("PALAESTRA_GRPC_SERVER", "thread")
    server = make_server(port)
    server.stop(0.5)
    assert isinstance(server, DirectServer)
    assert "PALAESTRA_GRPC_SERVER='thread' is neither 'direct' nor 'threaded'" in caplog.text


def test_a_direct_server_never_stopped_lets_the_process_exit_and_frees_its_port(port):
    import subprocess
    import sys

    code = ("from palaestra.envs.unity.servers import DirectServer\n"
            f"server = DirectServer({port})\n")  # no stop(): collected at exit
    done = subprocess.run([sys.executable, "-c", code], timeout=30, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    server = DirectServer(port)
    del server  # collected: stopped, the port free again
    DirectServer(port).stop(0.5)


def test_a_direct_server_that_fails_after_binding_lets_the_port_go_to_the_threaded_one(port, monkeypatch):
    # a grpcio whose core differs after the bind: the fallback must find the port free
    def broken(self):
        raise AttributeError("request_call reshaped")

    monkeypatch.setattr(DirectServer, "_request_call", broken)
    server = make_server(port)
    assert isinstance(server, ThreadedServer)
    server.stop(0.0)


def test_a_call_grpc_s_core_cannot_start_is_an_environment_error():
    from palaestra.envs.unity import servers

    with pytest.raises(EnvError, match="could not wait for Unity's next call .gRPC call error 8"):
        servers._started(8, "wait for Unity's next call")
    servers._started(0, "anything")  # GRPC_CALL_OK
    servers._started(None, "anything")
