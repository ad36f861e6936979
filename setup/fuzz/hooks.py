"""Schemathesis hooks for setup/fuzz-api.sh: the services' custom string formats."""

from hypothesis import strategies as st

import schemathesis

# `phone`: an international number valid in its country's numbering plan (libphonenumber).
# Mobile numbers of two plans, every one of them valid: Uganda's +25677 and Kenya's +2547.
schemathesis.openapi.format(
    "phone",
    st.one_of(
        st.integers(0, 9_999_999).map(lambda n: f"+25677{n:07d}"),
        st.integers(0, 99_999_999).map(lambda n: f"+2547{n:08d}"),
    ),
)

# `bcrypt-password`: 8 to 72 bytes of UTF-8, whatever the characters.
schemathesis.openapi.format(
    "bcrypt-password",
    st.text(min_size=2, max_size=72).filter(lambda s: 8 <= len(s.encode("utf-8")) <= 72),
)
