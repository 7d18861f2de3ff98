import pytest

from descend._validation import (
    check_bool, check_choice, check_int, check_no_unknown, check_pair, check_range,
)


@pytest.mark.parametrize(
    "call, exc, message",
    [
        (lambda: check_range("lr", -1, ge=0), ValueError, "`lr` must be >= 0. Received: lr=-1"),
        (lambda: check_range("eps", 0.0, gt=0), ValueError, "`eps` must be > 0. Received: eps=0.0"),
        (lambda: check_range("lr", float("nan"), ge=0), ValueError, "`lr` must be finite. Received: lr=nan"),
        (lambda: check_range("lr", "0.1", ge=0), TypeError, "`lr` must be a real number. Received: lr='0.1'"),
        (lambda: check_int("k", 1.5), TypeError, "`k` must be an integer. Received: k=1.5"),
        (lambda: check_int("k", 0, ge=1), ValueError, "`k` must be an integer >= 1. Received: k=0"),
        (lambda: check_bool("nesterov", 1), TypeError, "`nesterov` must be a bool. Received: nesterov=1"),
        (lambda: check_choice("mode", "up", ["min", "max"]), ValueError,
         "`mode` must be one of 'min', 'max'. Received: mode='up'"),
        (lambda: check_pair("betas", (1.2, 0.9)), ValueError,
         "`betas` must be a pair with each entry in [0.0, 1.0). Received: betas=(1.2, 0.9)"),
        (lambda: check_no_unknown("Adam()", {"bogus": 1}), TypeError, "bogus"),
    ],
)
def test_messages(call, exc, message):
    with pytest.raises(exc) as info:
        call()
    assert message in str(info.value)


def test_accepts_valid_values():
    assert check_range("lr", 0.1, ge=0) == 0.1
    assert check_pair("betas", (0.9, 0.999)) == (0.9, 0.999)
    assert check_int("k", 3, ge=1) == 3


@pytest.mark.parametrize("value", ["../x", "a/b", "a\\b", "", ".", "..", "a\x00", "a\nb", "x..y"])
def test_file_names_that_could_leave_the_folder_are_refused(value):
    from descend._validation import check_file_name
    with pytest.raises(ValueError, match="`variant` must be a plain file name"):
        check_file_name("variant", value)


def test_relative_paths():
    from descend._validation import check_file_name, check_relative_path
    assert check_file_name("n", "adam-lr=0.01") == "adam-lr=0.01"
    assert check_relative_path("d", "a/b/./c") == "a/b/./c"
    for bad in ["/etc", "\\x", "C:\\x", "a/../..", "..", "a/\x00"]:
        with pytest.raises(ValueError, match="`d` must be a relative path inside the output folder"):
            check_relative_path("d", bad)
    with pytest.raises(TypeError):
        check_relative_path("d", 3)
