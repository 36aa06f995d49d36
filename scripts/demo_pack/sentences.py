"""Real sentences for the dialog synthesis, written here: per language, subjects x verb phrases x adjuncts (every
combination is a grammatical sentence: third-person singular subjects, finite verb phrases) and whole lines
(questions, exclamations, replies). About 10 x 10 x 8 = 800 sentences per language plus the lines.
"""
from __future__ import annotations

import numpy as np

# language: (subjects, verb phrases, adjuncts, lines, adjunct first?) - "|" separates the items
_TABLE = {
    "en": ("My brother|The old captain|Your neighbour|The doctor|Nobody|Sarah|The driver|Everyone here|Her father|"
           "The new teacher",
           "opened the door|lost the keys again|called the police|wants to leave now|found the letter|"
           "saw something in the garden|forgot to tell you|is waiting outside|fixed the car|knows the truth",
           "this morning|before the storm|after dinner|last night|without a word|in the kitchen|"
           "at the station|twice",
           "Where have you been all day?|Don't touch that!|I told you, it was not my fault.|Are you sure about "
           "this?|Listen to me, we have no time.|Well, that changes everything.|Give me the money and go.|"
           "Why would anyone do that?|Come on, hurry up!|I'm sorry, I didn't mean it.|What time is it?|"
           "Nobody will ever know.", False),
    "de": ("Mein Bruder|Der alte Kapitän|Die Nachbarin|Der Arzt|Niemand|Anna|Der Fahrer|Jeder hier|Ihr Vater|"
           "Die neue Lehrerin",
           "öffnet die Tür|verliert wieder die Schlüssel|ruft die Polizei|will jetzt gehen|findet den Brief|"
           "sieht etwas im Garten|wartet draußen|repariert das Auto|kennt die Wahrheit|schreibt einen Brief",
           "heute Morgen|vor dem Sturm|nach dem Essen|in der Küche|ohne ein Wort|am Bahnhof|zweimal|"
           "jeden Abend",
           "Wo warst du den ganzen Tag?|Fass das nicht an!|Ich habe es dir gesagt.|Bist du sicher?|Hör mir zu, "
           "wir haben keine Zeit.|Das ändert alles.|Warum sollte jemand das tun?|Komm schon, beeil dich!|"
           "Es tut mir leid.|Wie spät ist es?|Niemand wird es je erfahren.", False),
    "fr": ("Mon frère|Le vieux capitaine|La voisine|Le médecin|Quelqu'un|Marie|Le chauffeur|Tout le monde|"
           "Son père|La nouvelle institutrice",
           "ouvre la porte|perd encore les clés|appelle la police|veut partir maintenant|trouve la lettre|"
           "voit quelque chose dans le jardin|attend dehors|répare la voiture|connaît la vérité|écrit une lettre",
           "ce matin|avant l'orage|après le dîner|dans la cuisine|sans un mot|à la gare|deux fois|chaque soir",
           "Où étais-tu toute la journée?|Ne touche pas à ça!|Je te l'avais dit.|Tu es sûr?|Écoute-moi, nous "
           "n'avons pas le temps.|Ça change tout.|Pourquoi quelqu'un ferait ça?|Allez, dépêche-toi!|"
           "Je suis désolé.|Quelle heure est-il?|Personne ne le saura jamais.", False),
    "es": ("Mi hermano|El viejo capitán|La vecina|El médico|Nadie|María|El conductor|Todo el mundo|Su padre|"
           "La nueva maestra",
           "abre la puerta|pierde otra vez las llaves|llama a la policía|quiere irse ahora|encuentra la carta|"
           "ve algo en el jardín|espera afuera|arregla el coche|sabe la verdad|escribe una carta",
           "esta mañana|antes de la tormenta|después de cenar|en la cocina|sin decir nada|en la estación|"
           "dos veces|cada noche",
           "¿Dónde has estado todo el día?|¡No toques eso!|Te lo dije.|¿Estás seguro?|Escúchame, no tenemos "
           "tiempo.|Eso lo cambia todo.|¿Por qué alguien haría eso?|¡Vamos, date prisa!|Lo siento mucho.|"
           "¿Qué hora es?|Nadie lo sabrá nunca.", False),
    "it": ("Mio fratello|Il vecchio capitano|La vicina|Il medico|Nessuno|Giulia|L'autista|Tutti qui|Suo padre|"
           "La nuova maestra",
           "apre la porta|perde di nuovo le chiavi|chiama la polizia|vuole andare via adesso|trova la lettera|"
           "vede qualcosa in giardino|aspetta fuori|ripara la macchina|conosce la verità|scrive una lettera",
           "stamattina|prima del temporale|dopo cena|in cucina|senza una parola|alla stazione|due volte|"
           "ogni sera",
           "Dove sei stato tutto il giorno?|Non toccarlo!|Te l'avevo detto.|Sei sicuro?|Ascoltami, non abbiamo "
           "tempo.|Questo cambia tutto.|Perché qualcuno dovrebbe farlo?|Dai, sbrigati!|Mi dispiace.|"
           "Che ore sono?|Nessuno lo saprà mai.", False),
    "pt": ("O meu irmão|O velho capitão|A vizinha|O médico|Ninguém|Ana|O motorista|Toda a gente|O pai dela|"
           "A nova professora",
           "abre a porta|perde outra vez as chaves|chama a polícia|quer sair agora|encontra a carta|"
           "vê alguma coisa no jardim|espera lá fora|conserta o carro|sabe a verdade|escreve uma carta",
           "esta manhã|antes da tempestade|depois do jantar|na cozinha|sem dizer nada|na estação|duas vezes|"
           "todas as noites",
           "Onde estiveste o dia todo?|Não toques nisso!|Eu avisei-te.|Tens a certeza?|Ouve, não temos tempo.|"
           "Isso muda tudo.|Porque é que alguém faria isso?|Vamos, depressa!|Desculpa.|Que horas são?|"
           "Ninguém vai saber.", False),
    "sv": ("Min bror|Den gamle kaptenen|Grannen|Läkaren|Ingen|Anna|Chauffören|Alla här|Hennes pappa|"
           "Den nya läraren",
           "öppnar dörren|tappar nycklarna igen|ringer polisen|vill gå nu|hittar brevet|ser något i trädgården|"
           "väntar utanför|lagar bilen|vet sanningen|skriver ett brev",
           "i morse|före stormen|efter middagen|i köket|utan ett ord|på stationen|två gånger|varje kväll",
           "Var har du varit hela dagen?|Rör inte det där!|Jag sa ju det.|Är du säker?|Lyssna, vi har ingen "
           "tid.|Det ändrar allt.|Varför skulle någon göra så?|Kom igen, skynda dig!|Förlåt mig.|Vad är "
           "klockan?|Ingen kommer någonsin att veta.", False),
    "ro": ("Fratele meu|Bătrânul căpitan|Vecina|Doctorul|Cineva|Maria|Șoferul|Toată lumea|Tatăl ei|"
           "Noua profesoară",
           "deschide ușa|pierde iar cheile|sună la poliție|vrea să plece acum|găsește scrisoarea|"
           "vede ceva în grădină|așteaptă afară|repară mașina|știe adevărul|scrie o scrisoare",
           "azi dimineață|înainte de furtună|după cină|în bucătărie|fără un cuvânt|la gară|de două ori|"
           "în fiecare seară",
           "Unde ai fost toată ziua?|Nu atinge asta!|Ți-am spus.|Ești sigur?|Ascultă, nu avem timp.|"
           "Asta schimbă totul.|De ce ar face cineva asta?|Haide, grăbește-te!|Îmi pare rău.|Cât e ceasul?|"
           "Nimeni nu va afla.", False),
    "id": ("Kakak saya|Kapten tua itu|Tetangga kami|Dokter itu|Tidak ada yang|Siti|Sopir itu|Semua orang|"
           "Ayahnya|Guru baru itu",
           "membuka pintu|kehilangan kunci lagi|menelepon polisi|mau pergi sekarang|menemukan surat itu|"
           "melihat sesuatu di kebun|menunggu di luar|memperbaiki mobil|tahu kebenarannya|menulis surat",
           "tadi pagi|sebelum badai|sesudah makan malam|di dapur|tanpa bicara|di stasiun|dua kali|setiap malam",
           "Kamu ke mana saja seharian?|Jangan sentuh itu!|Sudah kubilang.|Kamu yakin?|Dengar, kita tidak "
           "punya waktu.|Itu mengubah segalanya.|Kenapa ada orang yang berbuat begitu?|Ayo, cepat!|Maaf ya.|"
           "Jam berapa sekarang?|Tidak akan ada yang tahu.", False),
    "cs": ("Můj bratr|Starý kapitán|Sousedka|Doktor|Někdo|Jana|Řidič|Každý tady|Její otec|Nová učitelka",
           "otevírá dveře|zase ztrácí klíče|volá policii|chce teď odejít|najde dopis|vidí něco na zahradě|"
           "čeká venku|opravuje auto|zná pravdu|píše dopis",
           "dnes ráno|před bouří|po večeři|v kuchyni|beze slova|na nádraží|dvakrát|každý večer",
           "Kde jsi byl celý den?|Nesahej na to!|Říkal jsem ti to.|Jsi si jistý?|Poslouchej, nemáme čas.|"
           "To všechno mění.|Proč by to někdo dělal?|No tak, pospěš si!|Promiň.|Kolik je hodin?|"
           "Nikdo se to nedozví.", False),
    # ---- excluded from training (families.EXCLUDED_LANGS)
    "pl": ("Mój brat|Stary kapitan|Sąsiadka|Lekarz|Ktoś|Kasia|Kierowca|Każdy tutaj|Jej ojciec|Nowa nauczycielka",
           "otwiera drzwi|znowu gubi klucze|dzwoni na policję|chce teraz wyjść|znajduje list|widzi coś w ogrodzie|"
           "czeka na zewnątrz|naprawia samochód|zna prawdę|pisze list",
           "dziś rano|przed burzą|po kolacji|w kuchni|bez słowa|na dworcu|dwa razy|każdego wieczoru",
           "Gdzie byłeś cały dzień?|Nie dotykaj tego!|Mówiłem ci.|Jesteś pewien?|Słuchaj, nie mamy czasu.|"
           "To wszystko zmienia.|Dlaczego ktoś miałby to zrobić?|No dalej, pospiesz się!|Przepraszam.|"
           "Która godzina?|Nikt się nie dowie.", False),
    "fi": ("Veljeni|Vanha kapteeni|Naapuri|Lääkäri|Joku|Liisa|Kuljettaja|Jokainen täällä|Hänen isänsä|"
           "Uusi opettaja",
           "avaa oven|hukkaa avaimet taas|soittaa poliisille|haluaa lähteä nyt|löytää kirjeen|näkee jotain "
           "puutarhassa|odottaa ulkona|korjaa auton|tietää totuuden|kirjoittaa kirjeen",
           "tänä aamuna|ennen myrskyä|illallisen jälkeen|keittiössä|sanaakaan sanomatta|asemalla|kahdesti|"
           "joka ilta",
           "Missä olet ollut koko päivän?|Älä koske tuohon!|Minähän sanoin.|Oletko varma?|Kuuntele, meillä ei "
           "ole aikaa.|Se muuttaa kaiken.|Miksi kukaan tekisi niin?|Tule jo, pidä kiirettä!|Anteeksi.|"
           "Paljonko kello on?|Kukaan ei saa koskaan tietää.", False),
    "tr": ("Kardeşim|Yaşlı kaptan|Komşumuz|Doktor|Biri|Ayşe|Şoför|Herkes|Babası|Yeni öğretmen",
           "kapıyı açıyor|anahtarları yine kaybediyor|polisi arıyor|şimdi gitmek istiyor|mektubu buluyor|"
           "bahçede bir şey görüyor|dışarıda bekliyor|arabayı tamir ediyor|gerçeği biliyor|mektup yazıyor",
           "Bu sabah|Fırtınadan önce|Akşam yemeğinden sonra|Mutfakta|Tek kelime etmeden|İstasyonda|"
           "İki kez|Her akşam",
           "Bütün gün neredeydin?|Ona dokunma!|Sana söylemiştim.|Emin misin?|Dinle, hiç vaktimiz yok.|"
           "Bu her şeyi değiştirir.|Biri bunu neden yapsın?|Hadi, acele et!|Özür dilerim.|Saat kaç?|"
           "Kimse bilmeyecek.", True),
    "hu": ("A bátyám|Az öreg kapitány|A szomszéd|Az orvos|Valaki|Anna|A sofőr|Mindenki|Az apja|"
           "Az új tanárnő",
           "kinyitja az ajtót|megint elveszíti a kulcsokat|hívja a rendőrséget|most akar menni|megtalálja a "
           "levelet|lát valamit a kertben|kint vár|megjavítja az autót|tudja az igazat|levelet ír",
           "ma reggel|a vihar előtt|vacsora után|a konyhában|egy szó nélkül|az állomáson|kétszer|minden este",
           "Hol voltál egész nap?|Ne nyúlj hozzá!|Megmondtam.|Biztos vagy benne?|Figyelj, nincs időnk.|"
           "Ez mindent megváltoztat.|Miért tenne ilyet bárki?|Gyerünk, siess!|Sajnálom.|Hány óra van?|"
           "Senki sem fogja megtudni.", False),
    "nl": ("Mijn broer|De oude kapitein|De buurvrouw|De dokter|Niemand|Sanne|De chauffeur|Iedereen hier|"
           "Haar vader|De nieuwe juf",
           "opent de deur|verliest weer de sleutels|belt de politie|wil nu weggaan|vindt de brief|"
           "ziet iets in de tuin|wacht buiten|repareert de auto|kent de waarheid|schrijft een brief",
           "vanochtend|voor de storm|na het eten|in de keuken|zonder een woord|op het station|twee keer|"
           "elke avond",
           "Waar ben je de hele dag geweest?|Raak dat niet aan!|Ik zei het toch.|Weet je het zeker?|Luister, "
           "we hebben geen tijd.|Dat verandert alles.|Waarom zou iemand dat doen?|Kom op, schiet op!|Sorry.|"
           "Hoe laat is het?|Niemand zal het ooit weten.", False),
}


def table_key(lang: str) -> str:
    """espeak-ng voice name -> the table's key ('en-us' -> 'en', 'fr-fr' -> 'fr')."""
    return lang.split("-")[0]


def sentence(rng: np.random.Generator, lang: str) -> str:
    """One random sentence in `lang` (an espeak-ng language name)."""
    subj, vps, adj, lines, adj_first = (v.split("|") if isinstance(v, str) else v for v in _TABLE[table_key(lang)])
    if rng.random() < 0.3:
        return str(rng.choice(lines))
    s, v = rng.choice(subj), rng.choice(vps)
    if rng.random() < 0.3:
        return f"{s} {v}."
    a = rng.choice(adj)
    return f"{a} {s[0].lower() + s[1:]} {v}." if adj_first else f"{s} {v} {a}."


def utterance(rng: np.random.Generator, lang: str) -> str:
    """One turn of dialog: one to three sentences."""
    return " ".join(sentence(rng, lang) for _ in range(int(rng.integers(1, 4))))


def count(lang: str) -> int:
    subj, vps, adj, lines, _ = (v.split("|") if isinstance(v, str) else v for v in _TABLE[table_key(lang)])
    return len(subj) * len(vps) * (len(adj) + 1) + len(lines)
