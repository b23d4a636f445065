import { existsSync } from 'node:fs';
import path from 'node:path';

// A small Dockerfile linter for the rules that matter for IoT Edge module images. hadolint is not packaged for
// Debian bookworm and Docker cannot run on the development machines, so the rules are checked here instead:
// pinned base images, multi-stage builds, a non-root user at run time, no remote ADD, exec-form commands,
// apt hygiene, and every COPY source present in the build context.

export interface Instruction {
  keyword: string;
  args: string;
  line: number;
}

export interface Stage {
  from: string;
  name: string | undefined;
  instructions: Instruction[];
}

export interface LintProblem {
  line: number;
  rule: string;
  message: string;
}

/** Instructions with continuation lines joined; heredoc bodies (`COPY <<'EOF' file`) are skipped, not parsed. */
export function parseDockerfile(text: string): Instruction[] {
  const lines = text.split('\n');
  const instructions: Instruction[] = [];
  for (let i = 0; i < lines.length; i += 1) {
    const start = i;
    let current = lines[i]!;
    if (/^\s*(#|$)/.test(current)) continue;
    while (current.endsWith('\\') && i + 1 < lines.length) {
      i += 1;
      current = `${current.slice(0, -1)} ${lines[i]!.trim()}`;
    }
    const match = /^\s*([A-Za-z]+)\s+(.*)$/.exec(current);
    if (!match) {
      instructions.push({ keyword: 'INVALID', args: current, line: start + 1 });
      continue;
    }
    const instruction = { keyword: match[1]!.toUpperCase(), args: match[2]!.trim(), line: start + 1 };
    instructions.push(instruction);
    const heredoc = /<<-?'?"?([A-Za-z_]+)'?"?/.exec(instruction.args);
    if (heredoc) {
      while (i + 1 < lines.length && lines[i + 1]!.trim() !== heredoc[1]) i += 1;
      i += 1;
    }
  }
  return instructions;
}

export function stagesOf(instructions: readonly Instruction[]): Stage[] {
  const stages: Stage[] = [];
  for (const instruction of instructions) {
    if (instruction.keyword === 'FROM') {
      const words = instruction.args.split(/\s+/).filter((w) => !w.startsWith('--'));
      const as = words.findIndex((w) => w.toUpperCase() === 'AS');
      stages.push({ from: words[0] ?? '', name: as >= 0 ? words[as + 1] : undefined, instructions: [] });
    } else {
      stages.at(-1)?.instructions.push(instruction);
    }
  }
  return stages;
}

/** COPY/ADD sources that come from the build context (not `--from=`, not heredocs). */
export function contextSources(instruction: Instruction): string[] {
  if (instruction.keyword !== 'COPY' && instruction.keyword !== 'ADD') return [];
  if (/--from=/.test(instruction.args) || /<</.test(instruction.args)) return [];
  const words = instruction.args.startsWith('[') ? (JSON.parse(instruction.args) as string[]) : instruction.args.split(/\s+/);
  return words.filter((w) => !w.startsWith('--')).slice(0, -1);
}

export function lintDockerfile(text: string, contextDir: string): LintProblem[] {
  const problems: LintProblem[] = [];
  const report = (line: number, rule: string, message: string): void => void problems.push({ line, rule, message });
  const instructions = parseDockerfile(text);
  const stages = stagesOf(instructions);
  const stageNames = new Set(stages.map((s) => s.name).filter(Boolean));
  for (const instruction of instructions) {
    if (instruction.keyword === 'INVALID') report(instruction.line, 'syntax', `not an instruction: ${instruction.args}`);
    if (instruction.keyword === 'FROM') {
      const image = instruction.args.split(/\s+/).find((w) => !w.startsWith('--')) ?? '';
      const tag = /:([^/]+)$/.exec(image)?.[1];
      if (!stageNames.has(image) && !image.includes('@sha256:') && (!tag || tag === 'latest' || !/\d+\.\d+/.test(tag))) {
        report(instruction.line, 'pinned-base', `base image ${image} is not pinned to a version`);
      }
    }
    if (instruction.keyword === 'ADD') report(instruction.line, 'no-add', 'use COPY (ADD fetches URLs and unpacks archives implicitly)');
    if (instruction.keyword === 'MAINTAINER') report(instruction.line, 'deprecated', 'MAINTAINER is deprecated');
    if ((instruction.keyword === 'CMD' || instruction.keyword === 'ENTRYPOINT') && !instruction.args.startsWith('[')) {
      report(instruction.line, 'exec-form', `${instruction.keyword} in shell form does not pass SIGTERM to the process`);
    }
    if (instruction.keyword === 'RUN' && /apt-get install/.test(instruction.args)) {
      if (!/--no-install-recommends/.test(instruction.args)) report(instruction.line, 'apt-recommends', 'apt-get install without --no-install-recommends');
      if (!/-y\b|--yes/.test(instruction.args)) report(instruction.line, 'apt-yes', 'apt-get install without -y');
      if (!/rm -rf \/var\/lib\/apt\/lists/.test(instruction.args)) report(instruction.line, 'apt-lists', 'apt lists left in the layer');
    }
    if (instruction.keyword === 'RUN' && /\b(curl|wget)\b[^|]*\|\s*(ba)?sh/.test(instruction.args)) report(instruction.line, 'pipe-to-shell', 'remote script piped to a shell');
    if (instruction.keyword === 'RUN' && /\bnpm install\b/.test(instruction.args)) report(instruction.line, 'npm-ci', 'npm install in an image: use npm ci against the lockfile');
    for (const source of contextSources(instruction)) {
      if (/^[a-z]+:\/\//.test(source)) report(instruction.line, 'remote-source', `${source} is fetched at build time`);
      else if (!existsSync(path.resolve(contextDir, source))) report(instruction.line, 'copy-source', `${source} does not exist in the build context ${contextDir}`);
    }
  }
  if (stages.length < 2) report(1, 'multi-stage', 'a single-stage image ships its build tools');
  const final = stages.at(-1);
  if (final) {
    const users = final.instructions.filter((i) => i.keyword === 'USER');
    const user = users.at(-1)?.args;
    if (!user || /^(root|0)(:|$)/.test(user)) report(users.at(-1)?.line ?? 1, 'non-root', 'the final stage runs as root');
    if (!final.instructions.some((i) => i.keyword === 'CMD' || i.keyword === 'ENTRYPOINT')) report(1, 'cmd', 'the final stage has no CMD or ENTRYPOINT');
    for (const instruction of final.instructions) {
      if (instruction.keyword === 'RUN' && /\bnpm (ci|install)\b/.test(instruction.args)) report(instruction.line, 'final-install', 'dependencies installed in the final stage');
    }
  }
  return problems;
}
