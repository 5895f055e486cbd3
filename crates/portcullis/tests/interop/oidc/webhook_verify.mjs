// Verifies webhook deliveries with the npm `standardwebhooks` and `svix` libraries,
// as a receiver would: reads {"secrets": [...], "deliveries": [{headers, body}]}
// on stdin and prints, per delivery, which secrets each library accepted it under
// (and the parsed event). Exits non-zero only on a malformed input.
import { Webhook as StandardWebhook } from "standardwebhooks";
import { Webhook as SvixWebhook } from "svix";

const input = JSON.parse(await new Promise((resolve) => {
  let text = "";
  process.stdin.on("data", (c) => (text += c));
  process.stdin.on("end", () => resolve(text));
}));

// `svix` returns nothing on success, `standardwebhooks` the parsed event: a
// verification passed when it did not throw.
const tryVerify = (make, secret, body, headers) => {
  try {
    return { event: make(secret).verify(body, headers) };
  } catch (e) {
    return null;
  }
};

const out = input.deliveries.map(({ headers, body }) => {
  const result = { standardwebhooks: [], svix: [] };
  for (const [i, secret] of input.secrets.entries()) {
    const std = tryVerify((s) => new StandardWebhook(s), secret, body, {
      "webhook-id": headers["webhook-id"],
      "webhook-timestamp": headers["webhook-timestamp"],
      "webhook-signature": headers["webhook-signature"],
    });
    if (std) {
      result.standardwebhooks.push(i);
      result.event = std.event;
    }
    const svix = tryVerify((s) => new SvixWebhook(s), secret, body, {
      "svix-id": headers["svix-id"],
      "svix-timestamp": headers["svix-timestamp"],
      "svix-signature": headers["svix-signature"],
    });
    if (svix) result.svix.push(i);
  }
  return result;
});
console.log(JSON.stringify(out));
