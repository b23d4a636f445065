import { describe, expect, it } from 'vitest';
import { artifactSources } from '../src/app.ts';

const hex = 'ab'.repeat(32);

describe('artifactSources', () => {
  it('goes straight to the origin without a content cache', () => {
    expect(artifactSources({ contentCacheUrl: undefined, contentCacheToken: undefined }, 'http://store/a.bin', hex)).toEqual([{ url: 'http://store/a.bin' }]);
  });

  it('asks the cache first and lets it fill from an http(s) origin, with the token', () => {
    expect(artifactSources({ contentCacheUrl: 'http://cache:8080', contentCacheToken: 't' }, 'https://store/a.bin?sig=1', hex)).toEqual([
      { url: `http://cache:8080/sha256/${hex}?origin=${encodeURIComponent('https://store/a.bin?sig=1')}`, headers: { authorization: 'Bearer t' } },
      { url: 'https://store/a.bin?sig=1' },
    ]);
  });

  it('asks the cache for the hash alone when the origin is a file (a USB bundle the drop-in imported)', () => {
    const sources = artifactSources({ contentCacheUrl: 'http://cache:8080', contentCacheToken: undefined }, 'file:///media/usb/x/fw.bin', hex);
    expect(sources).toEqual([{ url: `http://cache:8080/sha256/${hex}` }, { url: 'file:///media/usb/x/fw.bin' }]);
  });
});
