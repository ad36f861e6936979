-- Failed log-ins per identifier (normalised e-mail or phone), so that guessing one account's
-- password is slowed down from however many addresses it comes.
CREATE TABLE login_failures (
    identifier   text PRIMARY KEY,
    failures     integer NOT NULL,
    window_start timestamptz NOT NULL,
    locked_until timestamptz
);
