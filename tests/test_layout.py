"""Pure layout helpers: temp file names record their writer and give it back."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from nbstore.layout import TEMP_SUFFIX, temp_name, temp_writer

_targets = st.text(alphabet="abcdef0123456789.-_", min_size=1, max_size=40)
_hosts = st.text(alphabet="0123456789abcdef", min_size=8, max_size=8)


@given(target=_targets, host=_hosts, pid=st.integers(min_value=1, max_value=2**22), token=_hosts)
def test_temp_name_records_its_writer(target, host, pid, token):
    """temp_writer gives back the host tag and pid that temp_name wrote, whatever the target's name."""
    name = temp_name(target, host, pid, token)
    assert name.endswith(TEMP_SUFFIX) and name.startswith(target)
    assert temp_writer(name) == (host, pid)


def test_other_names_record_no_writer():
    """Names temp_name did not make (older forms, strays) have no writer, so only their age counts."""
    for name in ["x.tmp", "k.json.123.abcd.tmp", "k.json.host-x.abcd.tmp", "k.json", "a.-12.b.tmp"]:
        assert temp_writer(name) is None
