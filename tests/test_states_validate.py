import pytest

from aso import validate
from aso.errors import ValidationError
from aso.state.states import (
    PUBLICATION_TRANSITIONS,
    TRANSFER_TRANSITIONS,
    PublicationState,
    TransferState,
)


def test_codes_are_crabs():
    assert [s.name for s in sorted(TransferState)] == [
        "NEW", "ACQUIRED", "FAILED", "DONE", "RETRY", "SUBMITTED", "KILL", "KILLED",
    ]
    assert PublicationState.NOT_REQUIRED == 5
    assert set(TRANSFER_TRANSITIONS) == set(TransferState)
    assert set(PUBLICATION_TRANSITIONS) == set(PublicationState)


@pytest.mark.parametrize("value", ["done", "DONE", 3, "3", TransferState.DONE])
def test_parse_accepts_names_and_codes(value):
    assert TransferState.parse(value) is TransferState.DONE


@pytest.mark.parametrize("value", ["FINISHED", 9, None, True, ""])
def test_parse_rejects_unknown_states_naming_the_field(value):
    with pytest.raises(ValidationError, match="list_of_transfer_state"):
        TransferState.parse(value, "list_of_transfer_state")


def test_row_id_is_sha224_of_the_lfn():
    import hashlib

    assert validate.lfn_id("/store/temp/user/a.root") == hashlib.sha224(b"/store/temp/user/a.root").hexdigest()
    assert len(validate.lfn_id("/x")) == 56


@pytest.mark.parametrize("bad", ["store/x", "/store/../etc", "/store/./x", "/a//b", "", "/a\x00b", 5])
def test_lfn_validation(bad):
    with pytest.raises(ValidationError, match="source_lfn"):
        validate.lfn(bad, "source_lfn")


@pytest.mark.parametrize("bad", ["", "a/b", "..", "x" * 65, "al ice", None])
def test_username_validation(bad):
    with pytest.raises(ValidationError, match="username"):
        validate.username(bad)


@pytest.mark.parametrize("bad", ["..", ".", "a/b", "", "a b"])
def test_path_parts(bad):
    with pytest.raises(ValidationError, match="job"):
        validate.path_part(bad, "job")


def test_adler32_normalisation():
    assert validate.adler32("ADLER32:1A2B") == "00001a2b"
    assert validate.adler32("deadbeef") == "deadbeef"
    for bad in ("md5:abcd", "xyz", "123456789", 12):
        with pytest.raises(ValidationError, match="checksum"):
            validate.adler32(bad)


def test_a_state_given_as_a_unicode_digit_is_a_validation_error_not_a_crash():
    with pytest.raises(ValidationError):
        TransferState.parse("²", "state")
