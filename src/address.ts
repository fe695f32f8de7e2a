/** Text forms of socket addresses, the one place they are formatted. */

/** Dotted quad from the first 4 bytes. */
export function formatIPv4(bytes: Uint8Array): string {
  return `${bytes[0]}.${bytes[1]}.${bytes[2]}.${bytes[3]}`;
}

/** RFC 5952 text (longest zero run compressed, lower case, IPv4-mapped as ::ffff:a.b.c.d). */
export function formatIPv6(bytes: Uint8Array): string {
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i] ?? 0) << 8) | (bytes[i + 1] ?? 0));
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) {
    return `::ffff:${formatIPv4(bytes.subarray(12, 16))}`;
  }
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(':');
  const head = hex.slice(0, bestStart).join(':');
  const tail = hex.slice(bestStart + bestLen).join(':');
  return `${head}::${tail}`;
}

/** `a.b.c.d:port` or `[v6]:port`. */
export function formatEndpoint(family: 4 | 6, bytes: Uint8Array, port: number): string {
  return joinHostPort(family, family === 4 ? formatIPv4(bytes) : formatIPv6(bytes), port);
}

/** An endpoint from an address already formatted (formatIPv4/formatIPv6). */
export function joinHostPort(family: 4 | 6, host: string, port: number): string {
  return family === 4 ? `${host}:${port}` : `[${host}]:${port}`;
}
