"""Which local process owns a client connection, read from the real /proc of this machine."""
import os
import socket
import subprocess
import sys

from receipts.addon import process
from support.proc import wait_for


def test_owner_of_a_real_local_connection_is_this_process():
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    try:
        found = process.owner_of(client.getsockname(), server.getsockname()[1])
        assert found["pid"] == os.getpid()
        assert found["exe"] == os.readlink("/proc/self/exe")
        assert found["cmdline"] == " ".join(sys.orig_argv)[:512]  # (pytest, or a pytest-xdist worker)
        assert process.owner_of(client.getsockname(), server.getsockname()[1] + 1) is None  # another peer
        assert process.owner_of(("10.1.2.3", 5555), 80) is None  # not local: not looked up
    finally:
        client.close()
        server.close()


def test_kernel_endpoint_format():
    table = ("  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n"
             "   0: 0100007F:D431 0100007F:1F90 01 00000000:00000000 00:00000000 00000000  1000        0 4242 1\n")
    assert process.socket_inode(table, ("127.0.0.1", 0xD431), 8080) == 4242
    assert process.socket_inode(table, ("127.0.0.1", 0xD431), 8081) is None


def test_app_names():
    assert process.app_name({"exe": "/usr/bin/python3.12", "cmdline": "python3 -u /srv/agent.py --x"}, "ua", "c") \
        == "python3.12 agent.py"
    assert process.app_name({"exe": "/usr/bin/curl", "cmdline": "curl -s http://x"}, "curl/8", "c") == "curl"
    assert process.app_name(None, "python-httpx/0.28", "127.0.0.1") == "python-httpx/0.28"
    assert process.app_name(None, None, "127.0.0.1") == "127.0.0.1"
    assert process.app_name(None, None, None) is None


def test_a_real_command_line_is_stored_redacted():
    """The command line read from /proc keeps the program and its script, never the secrets it carries."""
    secret = "sk-proc-" + os.urandom(8).hex()
    argv = [sys.executable, "-c", "import time; time.sleep(30)", "-H", f"Authorization: Bearer {secret}",
            "--api-key", secret, f"OPENAI_API_KEY={secret}", f"https://u:{secret}@h/?token={secret}"]
    child = subprocess.Popen(argv)
    try:
        found = wait_for(lambda: (d := process.describe(child.pid))["cmdline"] and "-H" in d["cmdline"] and d)
    finally:
        child.kill()
        child.wait()
    assert secret not in found["cmdline"] and found["cmdline"].count("[redacted sha256:") == 5, found
    assert found["cmdline"].startswith(f"{sys.executable} -c import time") and found["exe"]


def test_command_lines_are_redacted_before_they_are_cut():
    secret = "sk-cut-" + "a" * 40
    line = process.cmdline(["curl"] + ["-v"] * 158 + ["-H", f"Authorization: Bearer {secret}"])
    assert len(line) == 512 and "sk-cut" not in line  # the cut falls inside the secret: only its tag was cut
    assert process.cmdline(["curl"]) == "curl" and process.cmdline([]) is None


def test_app_names_survive_redaction():
    for argv, app in ((["python3", "-u", "/srv/agent.py", "--api-key", "k"], "python3.12 agent.py"),
                      (["python3", "/srv/bot.py", "OPENAI_API_KEY=sk-abcdefgh123"], "python3.12 bot.py"),
                      (["curl", "-H", "Authorization: Bearer sk-abcdefgh123", "http://x"], "curl")):
        exe = "/usr/bin/python3.12" if argv[0] == "python3" else "/usr/bin/curl"
        assert process.app_name({"exe": exe, "cmdline": process.cmdline(argv)}, "ua", "c") == app
