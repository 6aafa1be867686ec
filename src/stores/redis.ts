export interface RedisStoreOptions { client: unknown; prefix?: string; lock?: boolean }
export class RedisStore {
  constructor(readonly options: RedisStoreOptions) {}
}
