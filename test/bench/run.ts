// `npm run bench -- <name>`: runs test/bench/<name>.bench.ts, whose last printed line is one JSON object of figures.
import { readdirSync } from 'node:fs';
import { fileURLToPath, pathToFileURL } from 'node:url';
import path from 'node:path';

const here = path.dirname(fileURLToPath(import.meta.url));
const available = readdirSync(here)
  .filter((f) => f.endsWith('.bench.ts'))
  .map((f) => f.slice(0, -'.bench.ts'.length))
  .sort();
const name = process.argv[2];

if (!name || !available.includes(name)) {
  process.stderr.write(`usage: npm run bench -- <name> [options]\navailable: ${available.join(', ') || '(none yet)'}\n`);
  process.exitCode = 2;
} else {
  const bench = (await import(pathToFileURL(path.join(here, `${name}.bench.ts`)).href)) as {
    main: (args: string[]) => Promise<void>;
  };
  await bench.main(process.argv.slice(3));
}
