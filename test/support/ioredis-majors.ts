/**
 * The ioredis majors the optional peer range (ioredis >= 5) covers, for
 * the Redis suites to run on each: 6, which users get today and which
 * speaks RESP3 by default, and 5 (RESP2), installed as `ioredis-v5`.
 * Typed as 6's classes: the suites use what both offer alike.
 */
import Redis, { Cluster } from 'ioredis';
import RedisV5, { Cluster as ClusterV5 } from 'ioredis-v5';

export interface IoredisMajor {
  name: string;
  Redis: typeof Redis;
  Cluster: typeof Cluster;
  /** The RESP version the client speaks on its defaults. */
  resp: 2 | 3;
}

export const IOREDIS_MAJORS: IoredisMajor[] = [
  { name: 'ioredis 6', Redis, Cluster, resp: 3 },
  { name: 'ioredis 5', Redis: RedisV5 as unknown as typeof Redis, Cluster: ClusterV5 as unknown as typeof Cluster, resp: 2 },
];
