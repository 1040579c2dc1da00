// CloudWatch Logs filter patterns for unstructured lines, as FilterLogEvents
// takes them (https://docs.aws.amazon.com/AmazonCloudWatch/latest/logs/FilterAndPatternSyntax.html):
// terms that must all appear ("ERROR Exception"), "quoted phrases", terms to
// exclude ("ERROR -Retrying"), and either-or terms ("?ERROR ?WARN"). Matching
// is case-sensitive, as CloudWatch's is. JSON, space-delimited and regular
// expression patterns are refused by name rather than matched loosely.

export class BadPattern extends Error {}

export type LineMatcher = (message: string) => boolean;

export function compilePattern(pattern: string | undefined): LineMatcher {
  const text = (pattern ?? "").trim();
  if (!text) return () => true;
  if (text.startsWith("{")) throw new BadPattern("JSON filter patterns ({ $.field = ... }) are not supported by lmvm: use terms, \"quoted phrases\", -exclusions or ?alternatives.");
  if (text.startsWith("[")) throw new BadPattern("Space-delimited filter patterns ([a, b, ...]) are not supported by lmvm: use terms, \"quoted phrases\", -exclusions or ?alternatives.");
  if (text.startsWith("%")) throw new BadPattern("Regular expression filter patterns (%...%) are not supported by lmvm: use terms, \"quoted phrases\", -exclusions or ?alternatives.");
  const all: string[] = [];
  const none: string[] = [];
  const any: string[] = [];
  const re = /([?-]?)(?:"((?:[^"\\]|\\.)*)"|(\S+))/g;
  let m: RegExpExecArray | null;
  let consumed = 0;
  while ((m = re.exec(text))) {
    if (text.slice(consumed, m.index).trim()) break;
    consumed = m.index + m[0].length;
    const term = m[2] !== undefined ? m[2].replace(/\\(.)/g, "$1") : m[3]!;
    if (m[3] !== undefined && m[3].includes('"')) throw new BadPattern(`The filter pattern has an unbalanced quote near '${m[0]}': close the "quoted phrase".`);
    if (!term) continue;
    (m[1] === "?" ? any : m[1] === "-" ? none : all).push(term);
  }
  if (text.slice(consumed).trim()) throw new BadPattern(`The filter pattern could not be read past '${text.slice(consumed).trim()}': close the "quoted phrase".`);
  if (any.length && (all.length || none.length)) throw new BadPattern("A filter pattern uses either ?alternatives only, or terms and -exclusions: not both.");
  if (any.length) return (line) => any.some((t) => line.includes(t));
  return (line) => all.every((t) => line.includes(t)) && !none.some((t) => line.includes(t));
}
