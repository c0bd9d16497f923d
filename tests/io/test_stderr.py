"""fd 2 captured for a decode in one thread, and slidewin's own lines written from another."""

import subprocess
import sys
import textwrap


def test_a_line_said_while_a_decode_captures_fd2_reaches_the_user_not_the_capture():
    # In a child process, so that fd 2 is a pipe this test reads: a worker thread holds a capture
    # (as a decode left running by an interrupted run does) while the main thread says its line.
    code = textwrap.dedent("""
        import os, threading, time
        from slidewin.io.stderr import captured_stderr, eprint

        inside, captured = threading.Event(), []

        def decode():
            with captured_stderr() as lines:
                inside.set()
                time.sleep(0.5)
                os.write(2, b"Corrupt JPEG data: premature end of data segment\\n")
            captured.extend(lines)

        worker = threading.Thread(target=decode)
        worker.start()
        inside.wait()
        eprint("slidewin: interrupted after 2 of 13 images")
        worker.join()
        print(captured)
    """)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == ["slidewin: interrupted after 2 of 13 images"]
    assert proc.stdout.strip() == "['Corrupt JPEG data: premature end of data segment']"
