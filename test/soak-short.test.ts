/**
 * A few seconds of `npm run soak` (scripts/soak.ts) inside npm test: mixed
 * load with provoked lock timeouts, then exact counters, a store holding
 * exactly the live sessions, no lock left and the heap back near its
 * starting level. SOAK_SHORT_SECONDS changes the length (default 4).
 */
import assert from 'node:assert/strict';
import { formatReport, runSoak } from '../scripts/soak';

describe('soak (short)', function () {
  this.timeout(180_000);

  it('a few seconds of mixed load leave no lost update, no leaked session, lock or memory', async () => {
    const report = await runSoak({
      seconds: Number(process.env.SOAK_SHORT_SECONDS ?? 4),
      users: 60,
      concurrency: 16,
      lockTimeoutMs: 200,
      heapSlackMb: 16,
      log: () => undefined,
    });
    assert.deepEqual(report.problems, [], formatReport(report));
    assert.ok(report.requests > 100, `only ${report.requests} requests were made`);
    assert.ok(report.provokedTimeouts.timedOut > 0, 'some lock timeouts were provoked');
    assert.ok(report.sessions.regenerated > 0 && report.sessions.destroyed > 0, 'sessions were regenerated and destroyed');
  });
});
