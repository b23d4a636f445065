import type { HubMessage } from './hubMessage.ts';

// edgeHub routes: `FROM <source> [WHERE <condition>] INTO <sink>`. Sources are the message paths edgeHub
// knows (/messages/*, /messages/modules/*, /messages/modules/<m>/*, /messages/modules/<m>/outputs/*,
// /messages/modules/<m>/outputs/<o>, and /messages/* also covering leaf devices). Sinks are $upstream and
// BrokeredEndpoint("/modules/<m>/inputs/<i>"). Conditions are a subset of IoT Hub's query language:
// comparisons (= != <> < <= > >=) of properties with string, number or boolean literals, AND, OR, NOT,
// parentheses, IS_DEFINED(prop). `$`-names address system properties ($connectionDeviceId,
// $connectionModuleId, $contentType, $contentEncoding, $messageId, $correlationId, $outputName).

export type RouteSink = { kind: 'upstream' } | { kind: 'moduleInput'; moduleId: string; inputName: string };

export type RouteSource =
  | { kind: 'all' }
  | { kind: 'allModules' }
  | { kind: 'module'; moduleId: string }
  | { kind: 'moduleOutputs'; moduleId: string }
  | { kind: 'moduleOutput'; moduleId: string; outputName: string };

type Condition =
  | { op: 'and' | 'or'; left: Condition; right: Condition }
  | { op: 'not'; operand: Condition }
  | { op: 'compare'; comparator: Comparator; left: Operand; right: Operand }
  | { op: 'defined'; property: string };

type Comparator = '=' | '!=' | '<' | '<=' | '>' | '>=';
type Operand = { kind: 'property'; name: string } | { kind: 'literal'; value: string | number | boolean };

export interface Route {
  readonly name: string;
  readonly text: string;
  readonly source: RouteSource;
  readonly condition: Condition | undefined;
  readonly sink: RouteSink;
}

export class RouteSyntaxError extends Error {
  constructor(routeName: string, message: string) {
    super(`route ${routeName}: ${message}`);
    this.name = 'RouteSyntaxError';
  }
}

const routePattern = /^\s*FROM\s+(\S+)(?:\s+WHERE\s+([\s\S]+?))?\s+INTO\s+([\s\S]+?)\s*;?\s*$/i;

export function parseRoute(name: string, text: string): Route {
  const match = routePattern.exec(text);
  if (!match) throw new RouteSyntaxError(name, 'expected FROM <source> [WHERE <condition>] INTO <sink>');
  const [, sourceText = '', conditionText, sinkText = ''] = match;
  return {
    name,
    text,
    source: parseSource(name, sourceText),
    condition: conditionText ? new ConditionParser(name, conditionText).parse() : undefined,
    sink: parseSink(name, sinkText),
  };
}

function parseSource(name: string, text: string): RouteSource {
  const parts = text.split('/');
  if (parts[0] !== '' || parts[1] !== 'messages') throw new RouteSyntaxError(name, `source ${text} must start with /messages`);
  const rest = parts.slice(2);
  if (rest.length === 1 && rest[0] === '*') return { kind: 'all' };
  if (rest[0] !== 'modules') throw new RouteSyntaxError(name, `unsupported source ${text}`);
  if (rest.length === 2 && rest[1] === '*') return { kind: 'allModules' };
  const moduleId = rest[1];
  if (!moduleId || moduleId === '*') throw new RouteSyntaxError(name, `unsupported source ${text}`);
  if (rest.length === 3 && rest[2] === '*') return { kind: 'module', moduleId };
  if (rest[2] === 'outputs' && rest.length === 4 && rest[3]) {
    return rest[3] === '*' ? { kind: 'moduleOutputs', moduleId } : { kind: 'moduleOutput', moduleId, outputName: rest[3] };
  }
  throw new RouteSyntaxError(name, `unsupported source ${text}`);
}

function parseSink(name: string, text: string): RouteSink {
  if (text === '$upstream') return { kind: 'upstream' };
  const brokered = /^BrokeredEndpoint\(\s*"\/modules\/([^/"]+)\/inputs\/([^/"]+)"\s*\)$/i.exec(text);
  if (brokered?.[1] && brokered[2]) return { kind: 'moduleInput', moduleId: brokered[1], inputName: brokered[2] };
  throw new RouteSyntaxError(name, `unsupported sink ${text}: use $upstream or BrokeredEndpoint("/modules/<m>/inputs/<i>")`);
}

export function sourceMatches(source: RouteSource, message: HubMessage): boolean {
  switch (source.kind) {
    case 'all':
      return true;
    case 'allModules':
      return message.connectionModuleId !== undefined;
    case 'module':
      return message.connectionModuleId === source.moduleId;
    case 'moduleOutputs':
      return message.connectionModuleId === source.moduleId && message.outputName !== undefined;
    case 'moduleOutput':
      return message.connectionModuleId === source.moduleId && message.outputName === source.outputName;
  }
}

export function routeMatches(route: Route, message: HubMessage): boolean {
  return sourceMatches(route.source, message) && (route.condition === undefined || evaluate(route.condition, message) === true);
}

function propertyValue(name: string, message: HubMessage): string | undefined {
  if (!name.startsWith('$')) return message.properties[name];
  switch (name.toLowerCase()) {
    case '$connectiondeviceid':
      return message.connectionDeviceId;
    case '$connectionmoduleid':
      return message.connectionModuleId;
    case '$contenttype':
      return message.contentType;
    case '$contentencoding':
      return message.contentEncoding;
    case '$messageid':
      return message.messageId;
    case '$correlationid':
      return message.correlationId;
    case '$outputname':
      return message.outputName;
    default:
      return undefined;
  }
}

// IoT Hub's three-valued logic: a comparison with an undefined property is undefined, and so is a route.
function evaluate(condition: Condition, message: HubMessage): boolean | undefined {
  switch (condition.op) {
    case 'and': {
      const left = evaluate(condition.left, message);
      const right = evaluate(condition.right, message);
      if (left === false || right === false) return false;
      return left === true && right === true ? true : undefined;
    }
    case 'or': {
      const left = evaluate(condition.left, message);
      const right = evaluate(condition.right, message);
      if (left === true || right === true) return true;
      return left === false && right === false ? false : undefined;
    }
    case 'not': {
      const value = evaluate(condition.operand, message);
      return value === undefined ? undefined : !value;
    }
    case 'defined':
      return propertyValue(condition.property, message) !== undefined;
    case 'compare': {
      const left = operandValue(condition.left, message);
      const right = operandValue(condition.right, message);
      if (left === undefined || right === undefined) return undefined;
      return compare(condition.comparator, left, right);
    }
  }
}

function operandValue(operand: Operand, message: HubMessage): string | number | boolean | undefined {
  return operand.kind === 'literal' ? operand.value : propertyValue(operand.name, message);
}

function compare(comparator: Comparator, left: string | number | boolean, right: string | number | boolean): boolean | undefined {
  // Application properties are strings on the wire; compare them as numbers/booleans when the literal is one.
  const coerce = (value: string, like: number | boolean): number | boolean | undefined => {
    if (typeof like === 'number') return value.trim() !== '' && Number.isFinite(Number(value)) ? Number(value) : undefined;
    return value === 'true' ? true : value === 'false' ? false : undefined;
  };
  let l: string | number | boolean | undefined = left;
  let r: string | number | boolean | undefined = right;
  if (typeof l !== typeof r) {
    if (typeof l === 'string') l = coerce(l, r as number | boolean);
    else if (typeof r === 'string') r = coerce(r, l);
    else return undefined;
  }
  if (l === undefined || r === undefined) return undefined;
  switch (comparator) {
    case '=':
      return l === r;
    case '!=':
      return l !== r;
    case '<':
      return l < r;
    case '<=':
      return l <= r;
    case '>':
      return l > r;
    case '>=':
      return l >= r;
  }
}

type Token = { type: 'word' | 'string' | 'number' | 'op' | 'paren'; text: string };

class ConditionParser {
  readonly #name: string;
  readonly #tokens: Token[];
  #position = 0;

  constructor(name: string, text: string) {
    this.#name = name;
    this.#tokens = this.#tokenize(text);
  }

  parse(): Condition {
    const condition = this.#or();
    if (this.#position !== this.#tokens.length) this.#fail(`unexpected ${this.#tokens[this.#position]?.text ?? 'end'}`);
    return condition;
  }

  #fail(message: string): never {
    throw new RouteSyntaxError(this.#name, `WHERE clause: ${message}`);
  }

  #tokenize(text: string): Token[] {
    const tokens: Token[] = [];
    const pattern = /\s*(?:(')((?:[^']|'')*)'|("[^"]*")|(-?\d+(?:\.\d+)?)(?![\w$])|(<>|!=|<=|>=|=|<|>)|([()])|(,)|([$A-Za-z_][\w$.-]*))/y;
    let index = 0;
    while (index < text.length) {
      if (/^\s*$/.test(text.slice(index))) break;
      pattern.lastIndex = index;
      const m = pattern.exec(text);
      if (!m) this.#fail(`cannot read "${text.slice(index, index + 20)}"`);
      index = pattern.lastIndex;
      if (m[1]) tokens.push({ type: 'string', text: (m[2] ?? '').replaceAll("''", "'") });
      else if (m[3]) tokens.push({ type: 'string', text: m[3].slice(1, -1) });
      else if (m[4]) tokens.push({ type: 'number', text: m[4] });
      else if (m[5]) tokens.push({ type: 'op', text: m[5] === '<>' ? '!=' : m[5] });
      else if (m[6]) tokens.push({ type: 'paren', text: m[6] });
      else if (m[7]) tokens.push({ type: 'op', text: ',' });
      else if (m[8]) tokens.push({ type: 'word', text: m[8] });
    }
    return tokens;
  }

  #peekWord(word: string): boolean {
    const token = this.#tokens[this.#position];
    return token?.type === 'word' && token.text.toUpperCase() === word;
  }

  #or(): Condition {
    let left = this.#and();
    while (this.#peekWord('OR')) {
      this.#position += 1;
      left = { op: 'or', left, right: this.#and() };
    }
    return left;
  }

  #and(): Condition {
    let left = this.#not();
    while (this.#peekWord('AND')) {
      this.#position += 1;
      left = { op: 'and', left, right: this.#not() };
    }
    return left;
  }

  #not(): Condition {
    if (this.#peekWord('NOT')) {
      this.#position += 1;
      return { op: 'not', operand: this.#not() };
    }
    return this.#primary();
  }

  #primary(): Condition {
    const token = this.#tokens[this.#position];
    if (!token) this.#fail('unexpected end of condition');
    if (token.type === 'paren' && token.text === '(') {
      this.#position += 1;
      const inner = this.#or();
      if (this.#tokens[this.#position]?.text !== ')') this.#fail('missing )');
      this.#position += 1;
      return inner;
    }
    if (token.type === 'word' && token.text.toUpperCase() === 'IS_DEFINED') {
      this.#position += 1;
      if (this.#tokens[this.#position]?.text !== '(') this.#fail('IS_DEFINED needs (property)');
      const property = this.#tokens[this.#position + 1];
      if (property?.type !== 'word' || this.#tokens[this.#position + 2]?.text !== ')') this.#fail('IS_DEFINED needs (property)');
      this.#position += 3;
      return { op: 'defined', property: property.text };
    }
    const left = this.#operand();
    const comparator = this.#tokens[this.#position];
    if (comparator?.type !== 'op' || comparator.text === ',') this.#fail(`expected a comparison after ${token.text}`);
    this.#position += 1;
    const right = this.#operand();
    return { op: 'compare', comparator: comparator.text as Comparator, left, right };
  }

  #operand(): Operand {
    const token = this.#tokens[this.#position];
    if (!token) this.#fail('unexpected end of condition');
    this.#position += 1;
    if (token.type === 'string') return { kind: 'literal', value: token.text };
    if (token.type === 'number') return { kind: 'literal', value: Number(token.text) };
    if (token.type === 'word') {
      const upper = token.text.toUpperCase();
      if (upper === 'TRUE' || upper === 'FALSE') return { kind: 'literal', value: upper === 'TRUE' };
      return { kind: 'property', name: token.text };
    }
    this.#fail(`unexpected ${token.text}`);
  }
}

/**
 * Reads `$edgeHub` desired `routes` in both schema shapes: 1.0 (name -> "FROM ...") and 1.1+
 * (name -> { route, priority, timeToLiveSecs }).
 */
export function routesFromEdgeHubDesired(desired: unknown): Route[] {
  if (typeof desired !== 'object' || desired === null) return [];
  const routes = (desired as { routes?: unknown }).routes;
  if (routes === undefined) return [];
  if (typeof routes !== 'object' || routes === null || Array.isArray(routes)) {
    throw new RouteSyntaxError('(all)', 'routes must be an object of named routes');
  }
  return Object.entries(routes as Record<string, unknown>).map(([name, value]) => {
    const text = typeof value === 'string' ? value : (value as { route?: unknown } | null)?.route;
    if (typeof text !== 'string') throw new RouteSyntaxError(name, 'a route must be a string or an object with a route string');
    return parseRoute(name, text);
  });
}
