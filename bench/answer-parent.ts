/** The child side of bench/child.ts: each message from the parent is answered with what `run()` resolves. */
export function answerParent(run: () => Promise<unknown>): void {
  process.on('message', (message: { id: number; type: string }) => {
    if (message.type === 'exit') {
      process.send?.({ id: message.id, ok: true, result: {} });
      setImmediate(() => process.exit(0));
      return;
    }
    run().then(
      (result) => process.send?.({ id: message.id, ok: true, result }),
      (error: unknown) => process.send?.({ id: message.id, ok: false, error: error instanceof Error ? error.stack : String(error) }),
    );
  });
  process.send?.({ id: 0, ok: true, result: { ready: true } });
}
