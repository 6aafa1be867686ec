import { createHash, timingSafeEqual } from 'node:crypto';

export interface User {
  username: string;
  name: string;
}

/** The demo's fixed users. A real app keeps password hashes (argon2, scrypt) in a database. */
const USERS: Record<string, { name: string; password: string }> = {
  alice: { name: 'Alice Liddell', password: 'wonderland' },
  bob: { name: 'Bob the Builder', password: 'builder' },
};

export const DEMO_USERS = Object.entries(USERS).map(([username, { password }]) => ({ username, password }));

const digest = (text: string): Buffer => createHash('sha256').update(text).digest();

/** The user with these credentials, or undefined. Compares in constant time. */
export function checkPassword(username: string, password: string): User | undefined {
  const user = Object.hasOwn(USERS, username) ? USERS[username] : undefined;
  const matches = timingSafeEqual(digest(password), digest(user?.password ?? ''));
  return user !== undefined && matches ? { username, name: user.name } : undefined;
}
