import subprocess
import sys
import textwrap

import pytest

from aso.locking import LockHeld, component_lock


def test_second_holder_in_same_process_is_refused(tmp_path):
    with component_lock(tmp_path, "monitor"):
        with pytest.raises(LockHeld, match="monitor"), component_lock(tmp_path, "monitor"):
            pass
    with component_lock(tmp_path, "monitor"):
        pass  # released after the first holder left


def test_lock_held_by_another_process_and_freed_when_it_is_killed(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from aso.locking import component_lock
            with component_lock({str(tmp_path)!r}, "transfer"):
                print("held", flush=True)
                time.sleep(60)
        """)],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(LockHeld), component_lock(tmp_path, "transfer"):
            pass
    finally:
        holder.kill()
        holder.wait()
    with component_lock(tmp_path, "transfer"):
        pass


def test_component_name_is_validated(tmp_path):
    from aso.errors import ValidationError

    with pytest.raises(ValidationError, match="component"), component_lock(tmp_path, "../x"):
        pass
