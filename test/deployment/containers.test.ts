import { existsSync, readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { contextSources, lintDockerfile, parseDockerfile, stagesOf } from '../../deployment/src/dockerfileLint.ts';
import { modulesDir, readModuleDescription, readTemplate, repositoryRoot } from '../../deployment/src/manifest.ts';

// The images cannot be built here (no Docker), so what can be checked without building is checked: the
// Dockerfiles against the lint rules, every file they copy, and module.json against the folders and the template.

const moduleFolders = readdirSync(modulesDir).filter((m) => existsSync(path.join(modulesDir, m, 'module.json')));
const dockerfiles = moduleFolders.flatMap((m) => readdirSync(path.join(modulesDir, m)).filter((f) => f.startsWith('Dockerfile.')).map((f) => ({ module: m, file: f })));
/** Modules whose entry point may not have landed yet (the image would build but not start). Remove a name once its main.ts is committed. */
const awaitingEntryPoint: string[] = [];

describe('module.json', () => {
  it('exists for every module the deployment template runs, and only for those', () => {
    const text = JSON.stringify(readTemplate(false));
    const deployed = [...text.matchAll(/\$\{MODULES\.([A-Za-z0-9_]+)\}/g)].map((m) => m[1]);
    expect(moduleFolders.sort()).toEqual([...new Set(deployed)].sort());
  });

  it.each(moduleFolders)('%s: repository, version and platforms match the folder', (module) => {
    const description = readModuleDescription(module);
    expect(description.repository).toBe(`\${CONTAINER_REGISTRY_SERVER}/${module.toLowerCase()}`);
    const pkg = JSON.parse(readFileSync(path.join(modulesDir, module, 'package.json'), 'utf8')) as { version: string };
    expect(description.version).toBe(pkg.version);
    expect(Object.keys(description.platforms).sort()).toEqual(['amd64', 'amd64.debug', 'arm64v8', 'arm64v8.debug']);
    for (const [platform, dockerfile] of Object.entries(description.platforms)) {
      expect(path.normalize(dockerfile), platform).toBe(`Dockerfile.${platform}`);
      expect(existsSync(path.join(modulesDir, module, dockerfile)), dockerfile).toBe(true);
    }
    // The workspace build needs the root lockfile and @edge-ota/common, so the context is the repository root.
    expect(path.resolve(modulesDir, module, description.contextPath)).toBe(repositoryRoot);
  });
});

describe.each(dockerfiles)('$module/$file', ({ module, file }) => {
  const text = readFileSync(path.join(modulesDir, module, file), 'utf8');
  const context = path.resolve(modulesDir, module, readModuleDescription(module).contextPath);
  const stages = stagesOf(parseDockerfile(text));
  const final = stages.at(-1)!;

  it('passes the lint rules (pinned bases, multi-stage, non-root, no ADD, exec form, apt hygiene)', () => {
    expect(lintDockerfile(text, context)).toEqual([]);
  });

  it('copies only files that exist in the repository', () => {
    const sources = parseDockerfile(text).flatMap(contextSources);
    expect(sources.length).toBeGreaterThan(5);
    for (const source of sources) expect(existsSync(path.join(context, source)), source).toBe(true);
  });

  it('uses base images of its platform', () => {
    for (const stage of stages) {
      if (file.includes('arm64v8')) expect(stage.from).toMatch(/^arm64v8\//);
      else expect(stage.from).not.toMatch(/^arm64v8\//);
    }
  });

  it('installs production dependencies only for what it ships, and runs the compiled entry point', () => {
    const app = stages.find((s) => s.name === 'app')!;
    expect(app.instructions.some((i) => i.keyword === 'RUN' && /npm ci .*--omit=dev .*--workspace/.test(i.args))).toBe(true);
    expect(final.instructions.filter((i) => i.keyword === 'COPY').every((i) => /--from=(app|build)/.test(i.args))).toBe(true);
    const cmd = final.instructions.find((i) => i.keyword === 'CMD')!;
    const argv = JSON.parse(cmd.args) as string[];
    expect(argv.at(-1)).toBe('dist/src/main.js');
    const workdir = final.instructions.filter((i) => i.keyword === 'WORKDIR').at(-1)!.args;
    expect(workdir).toBe(`/app/modules/${module}`);
    const hasMain = existsSync(path.join(modulesDir, module, 'src', 'main.ts'));
    expect(hasMain || awaitingEntryPoint.includes(module), `${module}/src/main.ts, which the image runs as dist/src/main.js`).toBe(true);
  });

  it('keeps state on a volume path that the non-root user owns', () => {
    const template = JSON.stringify(readTemplate(false));
    const run = final.instructions.find((i) => i.keyword === 'RUN' && /chown node:node/.test(i.args))!;
    const stateDir = /mkdir -p (\S+)/.exec(run.args)![1]!;
    expect(template).toContain(`:${stateDir}"`);
    expect(final.instructions.filter((i) => i.keyword === 'USER').at(-1)!.args).toBe('node');
  });

  it('opens the debugger only in debug builds', () => {
    const debug = file.endsWith('.debug');
    expect(/--inspect=0\.0\.0\.0:9229/.test(text)).toBe(debug);
    expect(final.instructions.some((i) => i.keyword === 'EXPOSE' && i.args === '9229')).toBe(debug);
  });
});

describe('the Dockerfile linter', () => {
  const context = repositoryRoot;
  it('finds what it is there to find', () => {
    const bad = [
      'FROM node:latest',
      'ADD https://example.com/x.tgz /x',
      'COPY no/such/file /app/',
      'RUN apt-get update && apt-get install curl',
      'RUN curl -s https://example.com/i.sh | sh',
      'CMD node main.js',
    ].join('\n');
    const rules = lintDockerfile(bad, context).map((p) => p.rule).sort();
    expect(rules).toEqual(['apt-lists', 'apt-recommends', 'apt-yes', 'cmd', 'copy-source', 'exec-form', 'multi-stage', 'no-add', 'non-root', 'pinned-base', 'pipe-to-shell', 'remote-source'].filter((r) => r !== 'cmd').sort());
  });

  it('accepts a minimal good Dockerfile and skips heredoc bodies', () => {
    const good = ['FROM node:22.12.0-bookworm-slim AS build', 'COPY package.json ./', "COPY <<'EOF' x.json", 'NOT AN INSTRUCTION', 'EOF', 'FROM node:22.12.0-bookworm-slim', 'COPY --from=build /x /x', 'USER node', 'CMD ["node", "x.js"]'].join('\n');
    expect(lintDockerfile(good, context)).toEqual([]);
  });

  it('flags a final stage that runs as root', () => {
    expect(lintDockerfile(['FROM node:22.12.0-bookworm-slim AS a', 'FROM node:22.12.0-bookworm-slim', 'USER root', 'CMD ["x"]'].join('\n'), context).map((p) => p.rule)).toEqual(['non-root']);
  });
});
