-- How each session's user signed in (RFC 8176 `amr` values as a JSON array, e.g.
-- ["pwd"]), computed from the factors used at sign-in: ID tokens report it, and the
-- MFA step will add to it. Sessions from before this change read as ["pwd"].
ALTER TABLE sessions ADD COLUMN amr TEXT;
