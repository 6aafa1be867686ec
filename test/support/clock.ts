/**
 * Runs `body` with the wall clock (Date.now) held at what `clock.at` says,
 * moved only by the test: to land a call on an exact millisecond.
 */
export async function withHeldClock(body: (clock: { at: number }) => Promise<void>): Promise<void> {
  const realNow = Date.now;
  const clock = { at: realNow() };
  Date.now = () => clock.at;
  try {
    await body(clock);
  } finally {
    Date.now = realNow;
  }
}
