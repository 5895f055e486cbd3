// /api/auth/login, /callback, /logout and /session (settings from PORTCULLIS_*).
import { handleAuth } from "@portcullis/sdk/next";

export const { GET, POST } = handleAuth();
