/** Node's largest timer delay: setTimeout and setInterval silently turn anything longer into 1 ms. */
export const MAX_TIMER_MS = 2 ** 31 - 1;
