// How often the artifact store served each file since the dispatcher started: requests, downloads that reached the
// last byte, and bytes sent. This is the cloud egress an operator pays for, and how the demo shows that a hierarchy
// of caches fetched each artifact once. Kept in memory: a restart starts the counts again.

export interface ArtifactDownloadCount {
  sha256: string;
  requests: number;
  completed: number;
  bytesSent: number;
}

export class ArtifactDownloads {
  readonly #byArtifact = new Map<string, ArtifactDownloadCount>();

  #entry(sha256: string): ArtifactDownloadCount {
    let entry = this.#byArtifact.get(sha256);
    if (!entry) {
      entry = { sha256, requests: 0, completed: 0, bytesSent: 0 };
      this.#byArtifact.set(sha256, entry);
    }
    return entry;
  }

  started(sha256: string): void {
    this.#entry(sha256).requests += 1;
  }

  sent(sha256: string, bytes: number): void {
    this.#entry(sha256).bytesSent += bytes;
  }

  completed(sha256: string): void {
    this.#entry(sha256).completed += 1;
  }

  list(): ArtifactDownloadCount[] {
    return [...this.#byArtifact.values()].map((entry) => ({ ...entry })).sort((a, b) => a.sha256.localeCompare(b.sha256));
  }
}
